"""What this machine and this model can run: the values of each knob that are available, and why not.

Stdlib only. Each ``Need`` in ``NEEDS`` says once what some knob values need of the machine, the model or
the study's dtype. ``SearchSpace.build`` keeps the available values of each knob (Optuna's choices never
change between trials) and reports the others with their reason (``_unavailable``: the first need not
met); the rule of each need's name (``search.rules``) refuses a configuration that uses such a value (a
configuration from another machine's space, a queued or replayed one).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from qco_tune.calls.backends import BACKEND_INFO, FP8_MIN_CAPABILITY, backends_of
from qco_tune.core.config import CUDA_GRAPH_MODES, GROUP_OFFLOADS, SETTINGS_DEFAULTS, QuantBackend, TrialConfig
from qco_tune.core.records import (
    TRAIT_ATTENTION_DISPATCH,
    TRAIT_CONV3D,
    TRAIT_FUSED_QKV,
    TRAIT_REPEATED_BLOCKS,
    TRAIT_SLICING,
    TRAIT_TILING,
    Capabilities,
    ComponentInfo,
    ModelInfo,
)

BACKEND_LIBRARY: dict[str, str] = {name: info.library for name, info in BACKEND_INFO.items()}
"""Quantization backend → the library (as named in ``Capabilities.backends``) that provides it."""
BNB_BACKENDS = backends_of("bitsandbytes")
QUANTO_BACKENDS = backends_of("quanto")
TENSOR_CORE_CAPABILITY = (8, 0)
"""Ampere: TF32 tensor cores, and torchao's int4 (tinygemm) kernel."""
SETTINGS_KNOBS: tuple[str, ...] = tuple(SETTINGS_DEFAULTS)
HALF_ONLY_ATTENTION = frozenset({"flash", "_flash_3", "sage", "_native_flash", "_native_cudnn"})
"""Attention backends diffusers registers for bfloat16/float16 inputs only (``_check_qkv_dtype_bf16_or_fp16``)."""
VAE_TILING_CLASSES = frozenset(
    {
        "AutoencoderDC",
        "AutoencoderKL",
        "AutoencoderKLAllegro",
        "AutoencoderKLCogVideoX",
        "AutoencoderKLCosmos",
        "AutoencoderKLFlux2",
        "AutoencoderKLHunyuanImage",
        "AutoencoderKLHunyuanImageRefiner",
        "AutoencoderKLHunyuanVideo",
        "AutoencoderKLHunyuanVideo15",
        "AutoencoderKLKVAE",
        "AutoencoderKLKVAEVideo",
        "AutoencoderKLLTX2Video",
        "AutoencoderKLLTXVideo",
        "AutoencoderKLMagvit",
        "AutoencoderKLMiniMaxH3",
        "AutoencoderKLMochi",
        "AutoencoderKLQwenImage",
        "AutoencoderKLQwenImage21",
        "AutoencoderKLWan",
        "AutoencoderTiny",
        "AutoencoderVidTok",
    }
)
"""VAE classes that implement both tiled and sliced decoding (``use_tiling``, ``use_slicing``) in diffusers
0.42, for VAEs not inspected (``ComponentInfo.traits`` None: presets, studies stored before traits);
``tests/backends/test_knobs_cpu.py`` checks the table against the installed diffusers."""
VAE_2D_CLASSES = frozenset(
    {"AutoencoderKL", "AutoencoderDC", "AutoencoderTiny", "AutoencoderKLFlux2", "AutoencoderKLHunyuanImage"}
)
"""VAE classes made of 2D convolutions, whose weights take the channels-last memory format."""
DEFAULT_BLOCKS_PER_GROUP = (1, 2)
BOOLS = (False, True)
QUANTIZABLE_ROLES = ("denoiser", "text_encoder")
# The guide's quantization recipe uses bitsandbytes NF4; where that cannot run, the first of these that can.
RECIPE_BACKENDS: tuple[QuantBackend, ...] = ("bnb_nf4", "torchao_int8wo", "quanto_int8")
STREAM_KNOBS = ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage")


@dataclass(frozen=True)
class _Env:
    """What decides whether a knob's value can run: the machine, the model and the study's dtype."""

    caps: Capabilities
    model: ModelInfo
    dtype: str


def _vae(model: ModelInfo) -> ComponentInfo | None:
    return next((c for c in model.components if c.role == "vae"), None)


def _lacks(component: ComponentInfo | None, trait: str) -> bool:
    """The component was inspected (``ComponentInfo.traits``) and does not have ``trait``."""
    return component is not None and component.traits is not None and trait not in component.traits


def _denoiser(model: ModelInfo) -> ComponentInfo | None:
    return next((c for c in model.components if c.role == "denoiser"), None)


def compile_unavailable(scope: str, env: _Env) -> str | None:
    """Why ``compile = scope`` cannot run for this model on this machine, or None."""
    if scope == "none":
        return None
    if not env.caps.compile:
        return "torch.compile cannot build kernels here (no C compiler for the CPU, or no Triton for CUDA)"
    denoiser = _denoiser(env.model)
    if scope == "regional" and denoiser is not None and _lacks(denoiser, TRAIT_REPEATED_BLOCKS):
        return (
            f"{denoiser.class_name} declares no repeated blocks (_repeated_blocks), so compile_repeated_blocks has "
            "nothing to compile; compile=full compiles it whole"
        )
    return None


def _unavailable(knob: str, value: Any, env: _Env) -> str | None:
    """Why ``knob = value`` cannot run for this model and dtype on this machine (its first need not met), or None."""
    kind = QUANT if knob.startswith("quant.") else PLACE if knob.startswith("place.") else knob
    return next((why for need in NEEDS if kind in need.knobs and (why := need.unmet(kind, value, env))), None)


def _setting_unavailable(knob: str, value: Any, env: _Env) -> str | None:
    """Why a settings knob's non-default ``value`` cannot run here, or None."""
    caps, vae = env.caps, _vae(env.model)
    if knob in FAST_PATH_KNOBS:
        return _fast_path_unavailable(knob, env)
    if knob == "attention_backend":
        denoiser = _denoiser(env.model)
        if denoiser is not None and _lacks(denoiser, TRAIT_ATTENTION_DISPATCH):
            return (
                f"{denoiser.class_name}'s attention processors do not go through diffusers' attention dispatch, "
                f"so set_attention_backend({value!r}) would change nothing"
            )
        if not caps.cuda:
            return f"attention backend {value} needs a CUDA GPU (on the CPU only native attention runs)"
        if value in HALF_ONLY_ATTENTION and env.dtype == "float32":
            return f"attention backend {value} takes bfloat16 or float16 inputs only, and the study runs in float32"
        unusable = dict(caps.unusable).get(f"attention_backend={value}")
        if unusable:
            return f"attention backend {value}: {unusable}"
        if value not in caps.attention_backends:
            return f"attention backend {value} was not found usable here"
        return None
    if knob.startswith("vae_"):
        if vae is None:
            return f"{env.model.reference} has no VAE"
        if knob in ("vae_tiling", "vae_slicing"):
            what = knob.removeprefix("vae_")
            trait = TRAIT_TILING if knob == "vae_tiling" else TRAIT_SLICING
            lacking = _lacks(vae, trait) if vae.traits is not None else vae.class_name not in VAE_TILING_CLASSES
            if lacking:
                return f"{vae.class_name} does not implement {what} (enable_{what} finds no use_{what})"
        if knob == "vae_channels_last" and vae.class_name not in VAE_2D_CLASSES:
            return f"channels-last is a 2D memory format, and {vae.class_name} is not a 2D convolutional VAE"
        return None
    if knob == "tf32" and not _capability_at_least(caps, TENSOR_CORE_CAPABILITY):
        return "TF32 needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere)" + _this_one(caps)
    return None


FAST_PATH_KNOBS = ("fuse_qkv", "denoiser_channels_last", "inductor_profile")


def _fast_path_unavailable(knob: str, env: _Env) -> str | None:
    """Why a fast-path knob's non-default value cannot run for this model here, or None."""
    denoiser = _denoiser(env.model)
    if denoiser is None:
        return f"{env.model.reference} has no denoiser"
    if knob == "fuse_qkv" and _lacks(denoiser, TRAIT_FUSED_QKV):
        return f"{denoiser.class_name} does not implement fuse_qkv_projections (no fused to_qkv / to_kv projections)"
    if knob == "denoiser_channels_last":
        conv3d = TRAIT_CONV3D in denoiser.traits if denoiser.traits is not None else env.model.is_video
        if conv3d:  # uninspected: video denoisers patch-embed with 3D convolutions (Wan)
            return (
                f"{denoiser.class_name} has 3D convolution (5D) weights, which to(memory_format=torch.channels_last) "
                "refuses"
            )
    if knob == "inductor_profile" and not env.caps.cuda:
        return "the Inductor profile tunes the Triton kernels of a CUDA GPU (on the CPU Inductor writes C++)"
    return None


def _capability_at_least(caps: Capabilities, needed: tuple[int, int]) -> bool:
    return caps.cuda and caps.compute_capability is not None and tuple(caps.compute_capability) >= needed


def _this_one(caps: Capabilities) -> str:
    if caps.cuda and caps.compute_capability:
        return f"; this one is {caps.compute_capability[0]}.{caps.compute_capability[1]}"
    return ""


def _int4_reason(env: _Env) -> str | None:
    """torchao's int4 weight-only (tinygemm layout) packs on the GPU for its CUDA kernel, in bfloat16 only."""
    if not _capability_at_least(env.caps, TENSOR_CORE_CAPABILITY):
        return "torchao int4 (tinygemm) needs a CUDA GPU of compute capability 8.0 or newer" + _this_one(env.caps)
    if env.dtype != "bfloat16":
        return f"torchao int4 (tinygemm) quantizes bfloat16 weights only, and the study runs in {env.dtype}"
    return None


def _fp8_capable(caps: Capabilities) -> bool:
    return caps.cuda and caps.compute_capability is not None and tuple(caps.compute_capability) >= FP8_MIN_CAPABILITY


def _fp8_reason(caps: Capabilities) -> str:
    need = "float8 matmuls need a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper)"
    if caps.cuda and caps.compute_capability:
        return f"{need}; this one is {caps.compute_capability[0]}.{caps.compute_capability[1]}"
    return need


Group = Literal["quantization", "runtime", "settings"]
"""The groups of knobs: quantization (``quant.*``), runtime (compile and offload) and settings (the rest)."""
QUANT = "quant"
"""Every ``quant.<component>`` knob, as a ``Need`` names them."""
PLACE = "place"
"""Every ``place.<component>`` knob, as a ``Need`` names them."""


Lacking = list[tuple[Any, str]]
"""(value, why it cannot run here) for each value of a configuration that a need's absence refuses."""


def _reasons(lacking: Lacking) -> str:
    return "; ".join(why for _, why in lacking)


def _named(lacking: Lacking) -> str:
    return "; ".join(f"{value}: {why}" for value, why in lacking)


def _not_installed(libraries: list[str]) -> str:
    return f"{', '.join(libraries)} is not installed (or does not work) here"


@dataclass(frozen=True)
class Need:
    """What some values of some knobs need of the machine, the model or the study's dtype, said once: the
    space leaves those values out where the need is not met (``_unavailable``), and the rule of the same
    name refuses a configuration that uses them (``search.rules``)."""

    name: str
    """The rule's name."""
    group: Group
    knobs: tuple[str, ...]
    """The knobs it concerns (``QUANT``: every quantized component's)."""
    unmet: Callable[[str, Any, _Env], str | None]
    """Why ``knob = value`` cannot run here for want of it, or None where it is met (or the value needs nothing)."""
    in_a_configuration: Callable[[Lacking], str] = _reasons
    """The rule's sentence for a configuration with these values (by default their reasons)."""
    ruled: bool = True
    """False: no rule of its own, another one always refuses such a configuration first."""

    def refusal(self, config: TrialConfig, env: _Env) -> str | None:
        """The rule's sentence when values of ``config`` (those that mean something, its backends once each
        and in name order) need what ``env`` lacks; None when it has what they need."""
        in_play = _values_in_play(config)
        lacking: Lacking = []
        for knob in self.knobs:
            for value in in_play.get(knob, ()):
                why = self.unmet(knob, value, env)
                if why:
                    lacking.append((value, why))
        return self.in_a_configuration(lacking) if lacking else None


@functools.lru_cache(maxsize=4096)
def _values_in_play(config: TrialConfig) -> dict[str, tuple[Any, ...]]:
    """Knob → its values in ``config``: the settings that differ from their defaults, as given (a setting that
    means nothing there has its own rule), and the other knobs where they mean something (``QUANT``: the
    backends, in name order). Cached: each rule of a need asks it of every configuration checked; callers do
    not mutate it."""
    params = config.to_params()
    in_play: dict[str, tuple[Any, ...]] = {
        k: (v,) for k, v in params.items() if not k.startswith("quant.") and k not in SETTINGS_DEFAULTS
    }
    in_play.update({k: (v,) for k, v in config.settings().items()})
    in_play[PLACE] = tuple(sorted({p for _, p in config.placement}))
    in_play[QUANT] = tuple(sorted({v for k, v in params.items() if k.startswith("quant.") and v != "none"}))
    return in_play


def _backend_need(
    name: str,
    unmet: Callable[[str, _Env], str | None],
    in_a_configuration: Callable[[Lacking], str] = _reasons,
) -> Need:
    """A need of quantization backends (a ``quant.*`` knob's value other than none)."""
    return Need(
        name,
        "quantization",
        (QUANT,),
        lambda knob, value, env: unmet(value, env) if value != "none" else None,
        in_a_configuration,
    )


def _without_cuda(env: _Env, why: str) -> str | None:
    return None if env.caps.cuda else why


NEEDS: tuple[Need, ...] = (
    _backend_need(
        "bitsandbytes_needs_cuda",
        lambda b, env: _without_cuda(env, "bitsandbytes needs a CUDA GPU") if b in BNB_BACKENDS else None,
        lambda lacking: "bitsandbytes quantization needs a CUDA GPU",
    ),
    _backend_need(
        "fp8_needs_compute_capability",
        lambda b, env: _fp8_reason(env.caps) if b == "torchao_fp8dq" and not _fp8_capable(env.caps) else None,
        _named,
    ),
    _backend_need(
        "torchao_int4_needs_tinygemm", lambda b, env: _int4_reason(env) if b == "torchao_int4wo" else None, _named
    ),
    _backend_need(
        "backend_not_installed",
        lambda b, env: None if BACKEND_LIBRARY[b] in env.caps.backends else _not_installed([BACKEND_LIBRARY[b]]),
        lambda lacking: _not_installed(sorted({BACKEND_LIBRARY[b] for b, _ in lacking})),
    ),
    _backend_need(
        "backend_unusable_here", lambda b, env: f"{b}: {why}" if (why := dict(env.caps.unusable).get(b)) else None
    ),
    Need("compile_unavailable", "runtime", ("compile",), lambda knob, value, env: compile_unavailable(value, env)),
    Need(
        "cuda_graphs_need_cuda",
        "runtime",
        ("compile_mode",),
        lambda knob, value, env: (
            _without_cuda(
                env, "CUDA graphs need a GPU (max-autotune-no-cudagraphs searches the same kernels without them)"
            )
            if value in CUDA_GRAPH_MODES
            else None
        ),
        lambda lacking: f"compile mode {lacking[0][0]} records CUDA graphs, which need a GPU",
    ),
    Need(
        "offload_needs_cuda",
        "runtime",
        ("offload", PLACE),
        lambda knob, value, env: (
            _without_cuda(env, "no CUDA: offloading to the CPU the trial already runs on means nothing")
            if value not in ("none", "resident")
            else None
        ),
        lambda lacking: "offloading needs a CUDA GPU: without one the trial already runs on the CPU",
    ),
    Need(
        "streams_need_cuda",
        "runtime",
        STREAM_KNOBS,
        lambda knob, value, env: _without_cuda(env, "CUDA streams need a GPU") if value is True else None,
        ruled=False,  # they apply under group offloading only, which offload_needs_cuda refuses first
    ),
    Need(
        "setting_unavailable",
        "settings",
        SETTINGS_KNOBS,
        lambda knob, value, env: _setting_unavailable(knob, value, env) if value != SETTINGS_DEFAULTS[knob] else None,
    ),
)
"""Every need, in the order ``_unavailable`` checks them."""


def _missing_values(allowed: dict[str, tuple[Any, ...]], env: _Env) -> list[tuple[str, str]]:
    """(knob or value, why) for what the study allows and this machine cannot run; a whole knob in one line."""
    missing: dict[str, str] = {}
    compiling = {v for v in allowed["compile"] if v != "none" and _unavailable("compile", v, env) is None}
    grouping = GROUP_OFFLOADS & {v for k, vs in allowed.items() if k == "offload" or k.startswith("place.") for v in vs}
    for knob, choices in allowed.items():
        if knob in STREAM_KNOBS or (knob in ("compile_mode", "fullgraph") and not compiling):
            continue  # said once below, or not searched anyway
        if knob.startswith("place.") and "offload" in missing:
            continue  # every offload goes for the same reason, said once
        gone = [(value, why) for value in choices if (why := _unavailable(knob, value, env))]
        if knob == "compile" and gone and env.caps.compile:
            for value, why in gone:  # a scope this model cannot take (regional), not the machine's compile
                missing.setdefault(f"compile={value}", why)
        elif (knob in ("compile", "offload") or knob.startswith("place.")) and gone:
            missing.setdefault(knob, gone[0][1])  # every value but "none" goes for one reason
        elif knob == "compile_mode" and "compile" in missing:
            continue
        elif knob == "attention_backend":
            for value, why in gone:
                missing.setdefault(f"attention_backend={value}", why)
        elif knob in SETTINGS_KNOBS:
            if gone:
                missing.setdefault(knob, gone[0][1])  # one other value
        else:
            for value, why in gone:
                missing.setdefault(str(value), why)
    stream_gone = _unavailable("use_stream", True, env)
    if grouping and stream_gone:
        missing["use_stream"] = stream_gone
    return list(missing.items())


def _not_quantizable(component: ComponentInfo) -> str:
    if component.role == "vae":
        return (
            f"quantizing the VAE ({component.name}) is not offered: it is small and decoding is sensitive to precision"
        )
    return f"quantizing {component.name} ({component.role}) is not offered: only the denoiser and text encoders"
