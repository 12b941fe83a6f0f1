"""A study's spec as frozen values: the workload, the budget, the run and the space's restriction; its identity.

Stdlib only. ``qco_tune.core.spec`` parses TOML and command-line text into these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from qco_tune.core.config import MemoryMetric, WeightsKind


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
    placement: tuple[str, ...] = ()
    """``component:placement`` entries: the placements searched for each component named (without pipeline-wide
    offload); default: text encoders resident or released, the other components as ``offload`` says."""
    attention_backends: tuple[str, ...] = ()
    """Attention backends to search (``native`` and those usable here by default)."""
    layerwise_casting: tuple[str, ...] = ()
    vae_tiling: tuple[bool, ...] = ()
    vae_slicing: tuple[bool, ...] = ()
    """Default ``(False,)``: slicing splits a batch, and a trial decodes one image; list it to search it."""
    vae_channels_last: tuple[bool, ...] = ()
    tf32: tuple[bool, ...] = ()
    """Default: searched only in float32 studies (TF32 changes float32 matmuls only)."""
    fuse_qkv: tuple[bool, ...] = ()
    denoiser_channels_last: tuple[bool, ...] = ()
    inductor_profiles: tuple[str, ...] = ()
    """Inductor flag profiles (``default``, ``flux-fast``), searched with compilation only."""


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a study. Two runs of the same study must agree on ``identity()``."""

    name: str
    model: str = "tiny-flux"
    """A preset name, a Hugging Face hub id (from the local cache) or a local diffusers folder."""
    revision: str | None = None
    """The hub model's revision (a branch, tag or commit hash, as ``from_pretrained(revision=...)``); None: main."""
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
