"""Frozen, typed value objects shared by every part of qco-tune.

Stdlib only: the CLI, the TUI and the study loop import this without torch.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

QuantBackend = Literal[
    "none",
    "bnb_nf4",  # bitsandbytes 4-bit NF4, bf16 compute
    "bnb_fp4",  # bitsandbytes 4-bit FP4, bf16 compute
    "bnb_int8",  # bitsandbytes LLM.int8
    "torchao_int8wo",  # torchao int8 weight-only
    "torchao_fp8dq",  # torchao float8 dynamic activation + float8 weight (CC >= 8.9)
    "quanto_int8",  # optimum-quanto int8 weights
    "torchao_int4wo",  # torchao int4 weight-only, tinygemm layout (CUDA, CC >= 8.0, bfloat16)
    "torchao_fp8wo",  # torchao float8 weight-only (weights stored in float8, bf16 matmuls)
    "torchao_int8dq",  # torchao int8 dynamic activation + int8 weight
    "quanto_int4",  # optimum-quanto int4 weights
    "quanto_fp8",  # optimum-quanto float8 weights
]
CompileScope = Literal["none", "regional", "full"]
CompileMode = Literal["default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead"]
OffloadKind = Literal["none", "model", "sequential", "group_block", "group_leaf"]
LayerwiseCasting = Literal["none", "float8_e4m3fn"]
AttentionBackend = Literal[
    "native",  # torch's scaled_dot_product_attention, choosing its kernel itself (the default)
    "_native_cudnn",  # the same, forced to the cuDNN kernel
    "_native_efficient",  # forced to the memory-efficient kernel
    "_native_flash",  # forced to torch's FlashAttention kernel
    "flash",  # the flash-attn package (FlashAttention 2)
    "_flash_3",  # FlashAttention 3 (Hopper), built from source
    "sage",  # the sageattention package
    "xformers",  # xformers' memory-efficient attention
]
WeightsKind = Literal["real", "random"]
MemoryMetric = Literal["device", "reserved", "allocated"]
TrialStatus = Literal["ok", "oom", "error", "crash", "timeout", "interrupted"]

QUANT_BACKENDS: tuple[str, ...] = get_args(QuantBackend)
COMPILE_SCOPES: tuple[str, ...] = get_args(CompileScope)
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
OFFLOAD_KINDS: tuple[str, ...] = get_args(OffloadKind)
LAYERWISE_CASTINGS: tuple[str, ...] = get_args(LayerwiseCasting)
ATTENTION_BACKENDS: tuple[str, ...] = get_args(AttentionBackend)
CUDA_GRAPH_MODES: frozenset[str] = frozenset({"max-autotune", "reduce-overhead"})
GROUP_OFFLOADS: frozenset[str] = frozenset({"group_block", "group_leaf"})

CONFIG_SCHEMA_VERSION = 1

SETTINGS_DEFAULTS: dict[str, Any] = {
    "layerwise_casting": "none",
    "attention_backend": "native",
    "vae_tiling": False,
    "vae_slicing": False,
    "vae_channels_last": False,
    "tf32": False,
}
"""The knobs added after the first stored configurations (the "settings" of a pipeline), at their
defaults. At its default such a knob is left out of ``to_dict`` and ``to_params``, so a configuration
stored before it existed reads back, serialises and keys (``key``) exactly as it did."""

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"16GiB"``, ``"500 MB"`` or a plain number of bytes; ``ValueError`` otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        match = _SIZE_RE.match(text)
        if not match:
            raise ValueError(f'not a size: {text!r} (write e.g. "16GiB" or "512MiB")')
        value = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").lower()])
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return value


def format_size(num_bytes: float | None) -> str:
    """``16.0 GiB``-style text; ``-`` for unknown."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space: how a pipeline is quantized, compiled and offloaded.

    Components not named in ``quantization`` keep the study's dtype. The flat form
    (``to_params``) is what Optuna stores as trial parameters.
    """

    quantization: tuple[tuple[str, QuantBackend], ...] = ()
    """Pairs (pipeline component, backend), sorted by component; ``none`` entries are dropped."""
    compile: CompileScope = "none"
    """``regional`` compiles the repeated blocks (``compile_repeated_blocks``); ``full`` the whole denoiser."""
    compile_mode: CompileMode = "default"
    """torch.compile mode; meaningful only when ``compile`` is not ``none``."""
    fullgraph: bool = False
    """torch.compile ``fullgraph``; meaningful only when compiling."""
    offload: OffloadKind = "none"
    """none, model CPU offload, sequential CPU offload, or group offloading at block or leaf level."""
    blocks_per_group: int = 1
    """``num_blocks_per_group`` for ``group_block`` offloading."""
    use_stream: bool = False
    """Group offloading prefetches the next group on a CUDA stream."""
    non_blocking: bool = False
    """Group offloading copies with ``non_blocking=True``."""
    record_stream: bool = False
    """Group offloading ``record_stream``; only with ``use_stream``."""
    low_cpu_mem_usage: bool = False
    """Group offloading pins memory lazily instead of up front; only with ``use_stream``."""
    layerwise_casting: LayerwiseCasting = "none"
    """The denoiser's weights stored in this dtype and cast to the study's dtype layer by layer
    (``enable_layerwise_casting``); not with a quantized denoiser."""
    attention_backend: AttentionBackend = "native"
    """The denoiser's attention kernel (``set_attention_backend``); ``native`` is diffusers' default."""
    vae_tiling: bool = False
    """The VAE decodes in overlapping tiles (``vae.enable_tiling()``): less memory at large sizes."""
    vae_slicing: bool = False
    """The VAE decodes a batch one item at a time (``vae.enable_slicing()``)."""
    vae_channels_last: bool = False
    """The VAE's weights in channels-last memory format (``vae.to(memory_format=torch.channels_last)``)."""
    tf32: bool = False
    """float32 matmuls on TF32 tensor cores (``torch.set_float32_matmul_precision("high")``), process-wide."""

    def __post_init__(self) -> None:
        pairs = tuple(sorted((c, b) for c, b in dict(self.quantization).items() if b != "none"))
        object.__setattr__(self, "quantization", pairs)
        for _, backend in pairs:
            if backend not in QUANT_BACKENDS:
                raise ValueError(f"unknown quantization backend {backend!r}; one of {', '.join(QUANT_BACKENDS)}")
        _check_choice("compile", self.compile, COMPILE_SCOPES)
        _check_choice("compile_mode", self.compile_mode, COMPILE_MODES)
        _check_choice("offload", self.offload, OFFLOAD_KINDS)
        _check_choice("layerwise_casting", self.layerwise_casting, LAYERWISE_CASTINGS)
        _check_choice("attention_backend", self.attention_backend, ATTENTION_BACKENDS)
        for name in ("vae_tiling", "vae_slicing", "vae_channels_last", "tf32"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.blocks_per_group, int) or self.blocks_per_group < 1:
            raise ValueError(f"blocks_per_group must be a positive integer, got {self.blocks_per_group!r}")

    # -- views -------------------------------------------------------------------------------
    @property
    def quant_map(self) -> dict[str, str]:
        return dict(self.quantization)

    def backend_for(self, component: str) -> str:
        return self.quant_map.get(component, "none")

    @property
    def is_group_offload(self) -> bool:
        return self.offload in GROUP_OFFLOADS

    def settings(self) -> dict[str, Any]:
        """The settings knobs that differ from their defaults (``SETTINGS_DEFAULTS``), in that order."""
        return {k: getattr(self, k) for k, default in SETTINGS_DEFAULTS.items() if getattr(self, k) != default}

    def canonical(self) -> TrialConfig:
        """The same configuration with knobs that mean nothing reset, so equal behaviour compares equal."""
        compiling = self.compile != "none"
        group = self.is_group_offload
        return dataclasses.replace(
            self,
            compile_mode=self.compile_mode if compiling else "default",
            fullgraph=self.fullgraph if compiling else False,
            blocks_per_group=self.blocks_per_group if self.offload == "group_block" else 1,
            use_stream=self.use_stream if group else False,
            non_blocking=self.non_blocking if group else False,
            record_stream=self.record_stream if group and self.use_stream else False,
            low_cpu_mem_usage=self.low_cpu_mem_usage if group and self.use_stream else False,
        )

    def key(self) -> str:
        """A stable text key of the canonical configuration (for de-duplication)."""
        params = self.canonical().to_params()
        return ";".join(f"{k}={params[k]}" for k in sorted(params))

    def describe(self) -> str:
        """Short human summary, e.g. ``transformer:bnb_nf4 · compile full/max-autotune · group_leaf+stream``."""
        c = self.canonical()
        parts = [", ".join(f"{comp}:{b}" for comp, b in c.quantization) or "bf16"]
        if c.compile != "none":
            parts.append(f"compile {c.compile}/{c.compile_mode}" + (" fullgraph" if c.fullgraph else ""))
        if c.offload != "none":
            off = c.offload + (f"({c.blocks_per_group})" if c.offload == "group_block" else "")
            flags = [n for n in ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage") if getattr(c, n)]
            parts.append(off + ("+" + "+".join(flags) if flags else ""))
        parts += _describe_settings(c)
        return " · ".join(parts)

    # -- flat params (Optuna) -----------------------------------------------------------------
    def to_params(self) -> dict[str, Any]:
        """Flat parameters as Optuna stores them. Conditional knobs appear only where they exist."""
        c = self.canonical()
        params: dict[str, Any] = {f"quant.{comp}": b for comp, b in c.quantization}
        params["compile"] = c.compile
        if c.compile != "none":
            params["compile_mode"] = c.compile_mode
            params["fullgraph"] = c.fullgraph
        params["offload"] = c.offload
        if c.offload == "group_block":
            params["blocks_per_group"] = c.blocks_per_group
        if c.is_group_offload:
            params["use_stream"] = c.use_stream
            params["non_blocking"] = c.non_blocking
            if c.use_stream:
                params["record_stream"] = c.record_stream
                params["low_cpu_mem_usage"] = c.low_cpu_mem_usage
        params.update(c.settings())
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrialConfig:
        quant = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("quant.")}
        kwargs = {k: v for k, v in params.items() if not k.startswith("quant.")}
        known = {f.name for f in dataclasses.fields(cls)} - {"quantization"}
        unknown = set(kwargs) - known
        if unknown:
            raise ValueError(f"unknown configuration field(s): {', '.join(sorted(unknown))}")
        return cls(quantization=tuple(quant.items()), **kwargs)

    # -- dict (export, storage, TOML) ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        c = self.canonical()
        data = dataclasses.asdict(c)
        data["quantization"] = dict(c.quantization)
        for knob, default in SETTINGS_DEFAULTS.items():
            if data[knob] == default:
                del data[knob]  # as a configuration stored before the knob existed
        data["version"] = CONFIG_SCHEMA_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        data = dict(data)
        version = data.pop("version", CONFIG_SCHEMA_VERSION)
        if not isinstance(version, int) or version > CONFIG_SCHEMA_VERSION:
            raise ValueError(
                f"configuration format version {version} is newer than this qco-tune understands "
                f"({CONFIG_SCHEMA_VERSION}); upgrade qco-tune"
            )
        quant = data.pop("quantization", {}) or {}
        if not isinstance(quant, dict):
            raise ValueError("quantization must be a table of component = backend")
        known = {f.name for f in dataclasses.fields(cls)} - {"quantization"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration field(s): {', '.join(sorted(unknown))}")
        return cls(quantization=tuple(quant.items()), **data)


def _describe_settings(config: TrialConfig) -> list[str]:
    """``attention flash``, ``layerwise float8_e4m3fn``, ``vae tiling+slicing+channels_last``, ``tf32``."""
    parts = []
    if config.attention_backend != "native":
        parts.append(f"attention {config.attention_backend}")
    if config.layerwise_casting != "none":
        parts.append(f"layerwise {config.layerwise_casting}")
    vae = [n for n in ("tiling", "slicing", "channels_last") if getattr(config, f"vae_{n}")]
    if vae:
        parts.append("vae " + "+".join(vae))
    if config.tf32:
        parts.append("tf32")
    return parts


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class Workload:
    """What one pipeline call does. ``frames`` only for video pipelines."""

    prompt: str = "a photo of an astronaut riding a horse on the moon"
    negative_prompt: str | None = None
    height: int = 1024
    width: int = 1024
    frames: int | None = None
    steps: int = 28
    guidance: float | None = None
    seed: int = 0
    max_sequence_length: int | None = None


@dataclass(frozen=True)
class SpaceRestriction:
    """Limits a study's search space; empty tuples mean "everything that can run here"."""

    quantization: tuple[str, ...] = ()
    """Backends allowed for any component (``none`` is always allowed)."""
    quantize_components: tuple[str, ...] = ()
    """Pipeline components whose quantization is searched (default: denoiser and text encoders)."""
    compile: tuple[str, ...] = ()
    compile_modes: tuple[str, ...] = ()
    fullgraph: tuple[bool, ...] = ()
    offload: tuple[str, ...] = ()
    blocks_per_group: tuple[int, ...] = ()
    attention_backends: tuple[str, ...] = ()
    """Attention backends to search (``native`` and those usable here by default)."""
    layerwise_casting: tuple[str, ...] = ()
    vae_tiling: tuple[bool, ...] = ()
    vae_slicing: tuple[bool, ...] = ()
    """Default ``(False,)``: slicing splits a batch, and a trial decodes one image; list it to search it."""
    vae_channels_last: tuple[bool, ...] = ()
    tf32: tuple[bool, ...] = ()
    """Default: searched only in float32 studies (TF32 changes float32 matmuls only)."""


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a study. Two runs of the same study must agree on ``identity()``."""

    name: str
    model: str = "tiny-flux"
    """A preset name, a Hugging Face hub id (from the local cache) or a local diffusers folder."""
    weights: WeightsKind = "random"
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    workload: Workload = field(default_factory=Workload)
    vram_budget: int = 16 * 2**30
    """Bytes. On a machine without CUDA the trial runs on the CPU and the budget applies to host RAM."""
    memory_metric: MemoryMetric = "device"
    """What the budget counts: ``device`` (NVML, includes the CUDA context), ``reserved`` or ``allocated``."""
    host_ram_budget: int | None = None
    min_psnr: float | None = None
    """Decibels: a second constraint, the PSNR of a trial's output against the study's reference output."""
    trials: int | None = 20
    """Searched trials to run in total (seeded baselines included); None: until ``timeout``."""
    timeout: float | None = None
    """Wall-clock seconds for this run of the study; None: no limit."""
    trial_timeout: float = 1800.0
    """Seconds one trial may take before it is killed and recorded as a hang."""
    timed_calls: int = 3
    """Minimum timed pipeline calls per trial (more are made while the spread is large)."""
    max_timed_calls: int = 10
    warmup_calls: int = 1
    seed_baselines: bool = True
    measure_steps: int | None = None
    """Denoising steps each searched trial runs (fewer than ``workload.steps``): its latency is extrapolated
    to ``workload.steps`` from its per-step time, and the final Pareto front is measured again at the full
    step count. None: every trial runs the full workload."""
    compile_cache: bool = True
    """Share Inductor's compilation caches between the study's trials (per GPU kind and torch version);
    off: every trial compiles from scratch in a fresh cache."""
    mix_gpus: bool = False
    """Let workers on another GPU kind add trials (each trial still records its GPU). Off: a study is
    tied to the GPU kind that created it."""
    space: SpaceRestriction = field(default_factory=SpaceRestriction)

    def identity(self) -> dict[str, Any]:
        """The parts that make results comparable: a study resumed with a different identity is refused."""
        return identity_of(spec_to_dict(self))


RUN_ONLY_FIELDS = ("trials", "timeout", "trial_timeout", "name", "mix_gpus", "compile_cache")
"""Spec fields that may change between runs of one study without making its results incomparable."""


def dict_differences(a: dict[str, Any], b: dict[str, Any], sep: str = " → ", prefix: str = "") -> list[str]:
    """``"workload.steps: 28 → 4"`` for every leaf where two nested dicts differ, in key order."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += dict_differences(x, y, sep, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x!r}{sep}{y!r}")
    return out


def identity_of(spec_data: dict[str, Any]) -> dict[str, Any]:
    """The comparable part of a spec in dict form (``spec_to_dict``), e.g. as stored in a study.

    An empty ``space`` restriction means "unrestricted" and is left out, so a spec stored before a
    restriction field existed has the same identity as the same spec now.
    """
    identity = {k: v for k, v in spec_data.items() if k not in RUN_ONLY_FIELDS}
    if isinstance(identity.get("space"), dict):
        identity["space"] = {k: v for k, v in identity["space"].items() if v not in ([], ())}
    return identity


def spec_to_dict(spec: StudySpec) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists); ``None`` values are dropped."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return dict(clean(dataclasses.asdict(spec)))


@dataclass(frozen=True)
class Measurement:
    """What a finished trial measured. Times in seconds, memory in bytes; ``None`` = not measured."""

    status: TrialStatus
    device: str = "cpu"
    latency_s: float | None = None
    """Median of the timed full pipeline calls."""
    latency_spread_s: float | None = None
    """Interquartile range (max - min under 4 calls) of the timed calls."""
    latencies_s: tuple[float, ...] = ()
    step_time_s: float | None = None
    """Median time of one denoising step (``callback_on_step_end``)."""
    load_s: float | None = None
    first_call_s: float | None = None
    """Cold start: the first call, including compilation."""
    peak_device_bytes: int | None = None
    """NVML: device memory used by this trial, sampled (includes the CUDA context)."""
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_host_bytes: int | None = None
    """Peak resident memory of the trial process (pinned memory counts)."""
    reason: str | None = None
    """Why a trial did not finish (one line)."""
    output_tail: str | None = None
    psnr_db: float | None = None
    """Fidelity: PSNR in dB of the decoded output (first call) against the study's reference output;
    ``inf`` when identical. With random weights this measures numerical deviation, not picture quality."""
    latent_cosine: float | None = None
    """Fidelity: cosine similarity of the final latents against the reference's."""
    extra: dict[str, Any] = field(default_factory=dict)

    def memory_for(self, metric: MemoryMetric) -> int | None:
        """The peak that the budget counts; on the CPU device that is host memory."""
        if self.device == "cpu":
            return self.peak_host_bytes
        return {
            "device": self.peak_device_bytes,
            "reserved": self.peak_reserved_bytes,
            "allocated": self.peak_allocated_bytes,
        }[metric]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["latencies_s"] = list(self.latencies_s)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["latencies_s"] = tuple(kwargs.get("latencies_s") or ())
        return cls(**kwargs)


ComponentRole = Literal["denoiser", "text_encoder", "vae", "other"]


@dataclass(frozen=True)
class ComponentInfo:
    """One model component of a pipeline, as known before anything is loaded."""

    name: str
    """Attribute name on the pipeline (``transformer``, ``text_encoder_2``, ``vae``...)."""
    role: ComponentRole
    class_name: str
    params: int | None = None
    """Parameter count, where known (presets, safetensors headers)."""


@dataclass(frozen=True)
class ModelInfo:
    """A resolved ``model`` reference: what to load and which components it has."""

    reference: str
    """What the user wrote (preset name, hub id or path)."""
    source: Literal["preset", "local", "hub"]
    pipeline_class: str
    components: tuple[ComponentInfo, ...]
    path: str | None = None
    """Local folder to load from (None for a preset not materialised yet)."""
    is_video: bool = False

    @property
    def denoiser(self) -> str:
        return next(c.name for c in self.components if c.role == "denoiser")

    @property
    def text_encoders(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components if c.role == "text_encoder")

    def component(self, name: str) -> ComponentInfo:
        return next(c for c in self.components if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["components"] = [dataclasses.asdict(c) for c in self.components]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        data = dict(data)
        data["components"] = tuple(ComponentInfo(**c) for c in data.get("components", ()))
        return cls(**data)


@dataclass(frozen=True)
class Capabilities:
    """What the trial machine can run, probed once in a child process (the parent never touches CUDA)."""

    cuda: bool = False
    gpu_name: str | None = None
    gpu_count: int = 0
    total_memory: int | None = None
    """Bytes of device memory of the GPU trials run on."""
    compute_capability: tuple[int, int] | None = None
    backends: tuple[str, ...] = ()
    """Installed quantization libraries that work here: ``bitsandbytes``, ``torchao``, ``quanto``."""
    compile: bool = True
    """torch.compile can build kernels here (a C compiler for the CPU, Triton for CUDA)."""
    versions: tuple[tuple[str, str], ...] = ()
    """(package, version) of torch, diffusers, transformers, ... and the driver/CUDA where known."""
    host: str = ""
    attention_backends: tuple[str, ...] = ()
    """diffusers attention backends that ran a small attention call here (``native`` always runs)."""
    unusable: tuple[tuple[str, str], ...] = ()
    """(knob value, why) for what is installed but failed the probe: a quantization backend
    (``torchao_int4wo``) or an attention backend (``attention_backend=flash``)."""

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["versions"] = dict(self.versions)
        data["compute_capability"] = list(self.compute_capability) if self.compute_capability else None
        data["unusable"] = dict(self.unusable)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capabilities:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("compute_capability"):
            kwargs["compute_capability"] = tuple(kwargs["compute_capability"])
        kwargs["backends"] = tuple(kwargs.get("backends") or ())
        kwargs["versions"] = tuple(sorted(dict(kwargs.get("versions") or {}).items()))
        kwargs["attention_backends"] = tuple(kwargs.get("attention_backends") or ())
        kwargs["unusable"] = tuple(sorted(dict(kwargs.get("unusable") or {}).items()))
        return cls(**kwargs)


FaultKind = Literal["abort", "segfault", "hang", "oom", "error"]


@dataclass(frozen=True)
class TrialRequest:
    """What the parent hands a trial child (as JSON): everything needed, nothing live."""

    model: ModelInfo
    config: TrialConfig
    workload: Workload
    dtype: str = "bfloat16"
    device: Literal["cuda", "cpu"] = "cpu"
    memory_limit: int | None = None
    """Bytes the trial may use on the device; enforced where the GPU has more."""
    timed_calls: int = 3
    max_timed_calls: int = 10
    warmup_calls: int = 1
    trial_number: int = 0
    cache_dir: str | None = None
    """Where presets are materialised."""
    compile_cache_dir: str | None = None
    """Inductor's and Triton's persistent caches for this trial (shared by a study's trials); None: torch's
    own default, or a fresh cache with ``fresh_compile_cache``."""
    fresh_compile_cache: bool = False
    """Compile in a new, empty cache that is removed afterwards (a cold start from scratch)."""
    compile_artifacts_dir: str | None = None
    """The study's portable compile artefacts (``qco_tune.core.compile_artifacts``): a compiling trial loads
    those of its GPU kind, torch and Triton before its first call and saves its own after it. None: none."""
    fault: FaultKind | None = None
    """Test-only: make the child fail this way after loading."""
    reference_dir: str | None = None
    """Folder of the study's reference output (``output.npy``, ``latents.npy``): fidelity is measured
    against it when it is there."""
    save_reference: bool = False
    """This trial defines the reference: its first call's output is written to ``reference_dir``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "config": self.config.to_dict(),
            "workload": dataclasses.asdict(self.workload),
            **{
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name not in ("model", "config", "workload")
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRequest:
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        return cls(
            model=ModelInfo.from_dict(data.pop("model")),
            config=TrialConfig.from_dict(data.pop("config")),
            workload=Workload(**data.pop("workload")),
            **data,
        )
