"""What a trial is run on and what it measures: the model, the machine, the request and the measurement.

Stdlib only: frozen values that cross the process boundary as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from qco_tune.core.config import ComponentRole, FaultKind, MemoryMetric, TrialConfig, TrialStatus
from qco_tune.core.studyspec import Workload


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


@dataclass(frozen=True)
class ComponentInfo:
    """One model component of a pipeline, as known before anything is loaded."""

    name: str
    """Attribute name on the pipeline (``transformer``, ``text_encoder_2``, ``vae``...)."""
    role: ComponentRole
    class_name: str
    params: int | None = None
    """Parameter count, where known (presets, safetensors headers)."""
    traits: tuple[str, ...] | None = None
    """What the installed diffusers class offers for the knobs (``COMPONENT_TRAITS``), read from the class
    and its configuration without weights; None where not inspected (presets, whose classes offer all)."""


TRAIT_REPEATED_BLOCKS = "repeated_blocks"
"""The class declares ``_repeated_blocks``: ``compile_repeated_blocks`` (regional compile) has blocks to compile."""
TRAIT_ATTENTION_DISPATCH = "attention_dispatch"
"""Its attention processors go through diffusers' attention dispatch, so ``set_attention_backend`` changes them."""
TRAIT_TILING = "tiling"
"""A VAE that implements tiled decoding (``enable_tiling`` finds ``use_tiling``)."""
TRAIT_SLICING = "slicing"
"""A VAE that implements sliced decoding (``enable_slicing`` finds ``use_slicing``)."""
TRAIT_FUSED_QKV = "fused_qkv"
"""``fuse_qkv_projections()`` fuses its attention projections into ``to_qkv`` / ``to_kv`` modules."""
TRAIT_CONV3D = "conv3d"
"""It has 3D convolution (5D) weights, which ``to(memory_format=torch.channels_last)`` refuses."""
COMPONENT_TRAITS = (
    TRAIT_REPEATED_BLOCKS,
    TRAIT_ATTENTION_DISPATCH,
    TRAIT_TILING,
    TRAIT_SLICING,
    TRAIT_FUSED_QKV,
    TRAIT_CONV3D,
)


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
    revision: str | None = None
    """The hub revision ``path`` is the snapshot of (a branch, tag or commit hash); None: ``main``."""

    @property
    def denoiser(self) -> str:
        return next(c.name for c in self.components if c.role == "denoiser")

    @property
    def text_encoders(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components if c.role == "text_encoder")

    def component(self, name: str) -> ComponentInfo:
        return next(c for c in self.components if c.name == name)

    def with_traits(self, traits: dict[str, tuple[str, ...]]) -> ModelInfo:
        """The same model with the components named in ``traits`` given those traits (the others unchanged)."""
        components = tuple(
            dataclasses.replace(c, traits=tuple(traits[c.name])) if c.name in traits else c for c in self.components
        )
        return dataclasses.replace(self, components=components)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["components"] = [dataclasses.asdict(c) for c in self.components]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        data = dict(data)
        data["components"] = tuple(_component_from_dict(c) for c in data.get("components", ()))
        return cls(**data)


def _component_from_dict(data: dict[str, Any]) -> ComponentInfo:
    traits = data.get("traits")
    return ComponentInfo(**{**data, "traits": None if traits is None else tuple(traits)})


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
