"""A configuration: the knobs of quantization, compilation, offloading and settings, and ``TrialConfig``.

Stdlib only: the CLI, the TUI and the study loop import this without torch. The other frozen values
live beside it: ``studyspec`` (a study's spec), ``records`` (model, machine, request, measurement),
``units`` (sizes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from qco_tune.core.placement import GROUP_PLACEMENTS, PLACEMENTS, SHORTHAND_PLACEMENT, Placement

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


InductorProfile = Literal["default", "flux-fast"]
"""Named sets of ``torch._inductor.config`` flags (``qco_tune.calls.dynamo.INDUCTOR_PROFILES``)."""


WeightsKind = Literal["real", "random"]


MemoryMetric = Literal["device", "reserved", "allocated"]


TrialStatus = Literal["ok", "oom", "error", "crash", "timeout", "interrupted"]


QUANT_BACKENDS: tuple[str, ...] = get_args(QuantBackend)


COMPILE_SCOPES: tuple[str, ...] = get_args(CompileScope)


COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)


OFFLOAD_KINDS: tuple[str, ...] = get_args(OffloadKind)


LAYERWISE_CASTINGS: tuple[str, ...] = get_args(LayerwiseCasting)


ATTENTION_BACKENDS: tuple[str, ...] = get_args(AttentionBackend)


INDUCTOR_PROFILE_NAMES: tuple[str, ...] = get_args(InductorProfile)


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
    **{  # the fast path (huggingface/flux-fast's knobs beyond float8 and compile)
        "fuse_qkv": False,
        "denoiser_channels_last": False,
        "inductor_profile": "default",
    },
}
"""The knobs added after the first stored configurations (the "settings" of a pipeline), at their
defaults. At its default such a knob is left out of ``to_dict`` and ``to_params``, so a configuration
stored before it existed reads back, serialises and keys (``key``) exactly as it did."""


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
    """none, model CPU offload, sequential CPU offload, or group offloading at block or leaf level: the
    pipeline-wide placement (``placement`` overrides it per component)."""
    placement: tuple[tuple[str, Placement], ...] = ()
    """Pairs (pipeline component, placement), sorted by component: where a component's weights live when
    it differs from what ``offload`` says for every component; entries equal to that are dropped."""
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
    fuse_qkv: bool = False
    """The denoiser's query, key and value projections fused into one matmul (``fuse_qkv_projections()``);
    the unfused projections stay loaded beside the fused ones. Not with a quantized denoiser."""
    denoiser_channels_last: bool = False
    """The denoiser's 4D weights in channels-last memory format (``to(memory_format=torch.channels_last)``);
    a transformer's linear weights are left as they are."""
    inductor_profile: InductorProfile = "default"
    """A named set of Inductor flags set before compiling (``flux-fast``: flux-fast's four); only when compiling."""

    def __post_init__(self) -> None:
        pairs = tuple(sorted((c, b) for c, b in dict(self.quantization).items() if b != "none"))
        object.__setattr__(self, "quantization", pairs)
        for _, backend in pairs:
            if backend not in QUANT_BACKENDS:
                raise ValueError(f"unknown quantization backend {backend!r}; one of {', '.join(QUANT_BACKENDS)}")
        _check_choice("compile", self.compile, COMPILE_SCOPES)
        _check_choice("compile_mode", self.compile_mode, COMPILE_MODES)
        _check_choice("offload", self.offload, OFFLOAD_KINDS)
        self._normalise_placement()
        _check_choice("layerwise_casting", self.layerwise_casting, LAYERWISE_CASTINGS)
        _check_choice("attention_backend", self.attention_backend, ATTENTION_BACKENDS)
        _check_choice("inductor_profile", self.inductor_profile, INDUCTOR_PROFILE_NAMES)
        for name in ("vae_tiling", "vae_slicing", "vae_channels_last", "tf32", "fuse_qkv", "denoiser_channels_last"):
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

    def placement_of(self, component: str) -> str:
        """Where ``component``'s weights live: its own placement, else the pipeline-wide ``offload``'s."""
        return dict(self.placement).get(component, SHORTHAND_PLACEMENT[self.offload])

    def placements(self) -> set[str]:
        """Every placement some component has (the pipeline-wide one included)."""
        return {SHORTHAND_PLACEMENT[self.offload], *(p for _, p in self.placement)}

    @property
    def is_group_offload(self) -> bool:
        """Some component is group-offloaded (so the stream options mean something)."""
        return bool(self.placements() & GROUP_PLACEMENTS)

    @property
    def is_offloaded(self) -> bool:
        """Some component's weights are not resident on the device."""
        return self.placements() != {"resident"}

    def _normalise_placement(self) -> None:
        default = SHORTHAND_PLACEMENT.get(self.offload)
        pairs = tuple(sorted((c, p) for c, p in dict(self.placement).items() if p != default))
        for _, placement in pairs:
            _check_choice("placement", placement, PLACEMENTS)
        object.__setattr__(self, "placement", pairs)

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
            blocks_per_group=self.blocks_per_group if "group_block" in self.placements() else 1,
            use_stream=self.use_stream if group else False,
            non_blocking=self.non_blocking if group else False,
            record_stream=self.record_stream if group and self.use_stream else False,
            low_cpu_mem_usage=self.low_cpu_mem_usage if group and self.use_stream else False,
            inductor_profile=self.inductor_profile if compiling else "default",
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
        if c.is_offloaded:
            off = ", ".join([c.offload] * (c.offload != "none") + [f"{comp}:{p}" for comp, p in c.placement])
            off += f"({c.blocks_per_group})" if "group_block" in c.placements() else ""
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
        params.update({f"place.{comp}": p for comp, p in c.placement})
        if "group_block" in c.placements():
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
        place = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("place.")}
        kwargs = {k: v for k, v in params.items() if not k.startswith(("quant.", "place."))}
        known = {f.name for f in dataclasses.fields(cls)} - {"quantization", "placement"}
        unknown = set(kwargs) - known
        if unknown:
            raise ValueError(f"unknown configuration field(s): {', '.join(sorted(unknown))}")
        return cls(quantization=tuple(quant.items()), placement=tuple(place.items()), **kwargs)

    # -- dict (export, storage, TOML) ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        c = self.canonical()
        data = dataclasses.asdict(c)
        data["quantization"] = dict(c.quantization)
        data["placement"] = dict(c.placement)
        if not c.placement:
            del data["placement"]  # as a configuration stored before placement per component existed
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
        place = data.pop("placement", {}) or {}
        if not isinstance(place, dict):
            raise ValueError("placement must be a table of component = placement")
        known = {f.name for f in dataclasses.fields(cls)} - {"quantization", "placement"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration field(s): {', '.join(sorted(unknown))}")
        return cls(quantization=tuple(quant.items()), placement=tuple(place.items()), **data)


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
    return parts + _describe_fast_path(config)


def _describe_fast_path(config: TrialConfig) -> list[str]:
    """``fused qkv``, ``denoiser channels_last``, ``inductor flux-fast``."""
    parts = ["fused qkv"] if config.fuse_qkv else []
    if config.denoiser_channels_last:
        parts.append("denoiser channels_last")
    if config.inductor_profile != "default":
        parts.append(f"inductor {config.inductor_profile}")
    return parts


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


ComponentRole = Literal["denoiser", "text_encoder", "vae", "other"]


FaultKind = Literal["abort", "segfault", "hang", "oom", "error"]
