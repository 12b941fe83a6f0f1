"""Why one value of a knob cannot run here: the checks of the machine, the model and the study's dtype.

Stdlib only. ``availability.NEEDS`` calls these checks, knob by knob; the tables say what diffusers'
classes offer where a model's components were not inspected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qco_tune.calls.backends import FP8_MIN_CAPABILITY
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

TENSOR_CORE_CAPABILITY = (8, 0)
"""Ampere: TF32 tensor cores, and torchao's int4 (tinygemm) kernel."""
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


@dataclass(frozen=True)
class Env:
    """What decides whether a knob's value can run: the machine, the model and the study's dtype."""

    caps: Capabilities
    model: ModelInfo
    dtype: str


def vae_of(model: ModelInfo) -> ComponentInfo | None:
    """The model's VAE, or None for a pipeline without one."""
    return next((c for c in model.components if c.role == "vae"), None)


def _lacks(component: ComponentInfo | None, trait: str) -> bool:
    """The component was inspected (``ComponentInfo.traits``) and does not have ``trait``."""
    return component is not None and component.traits is not None and trait not in component.traits


def _denoiser(model: ModelInfo) -> ComponentInfo | None:
    return next((c for c in model.components if c.role == "denoiser"), None)


def compile_unavailable(scope: str, env: Env) -> str | None:
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


def setting_unavailable(knob: str, value: Any, env: Env) -> str | None:
    """Why a settings knob's non-default ``value`` cannot run here, or None."""
    caps, vae = env.caps, vae_of(env.model)
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


def _fast_path_unavailable(knob: str, env: Env) -> str | None:
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


def int4_reason(env: Env) -> str | None:
    """torchao's int4 weight-only (tinygemm layout) packs on the GPU for its CUDA kernel, in bfloat16 only."""
    if not _capability_at_least(env.caps, TENSOR_CORE_CAPABILITY):
        return "torchao int4 (tinygemm) needs a CUDA GPU of compute capability 8.0 or newer" + _this_one(env.caps)
    if env.dtype != "bfloat16":
        return f"torchao int4 (tinygemm) quantizes bfloat16 weights only, and the study runs in {env.dtype}"
    return None


def fp8_capable(caps: Capabilities) -> bool:
    """A GPU that runs float8 matmuls (``FP8_MIN_CAPABILITY``)."""
    return caps.cuda and caps.compute_capability is not None and tuple(caps.compute_capability) >= FP8_MIN_CAPABILITY


def fp8_reason(caps: Capabilities) -> str:
    """Why float8 quantization cannot run on a machine that is not ``fp8_capable``."""
    need = "float8 matmuls need a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper)"
    if caps.cuda and caps.compute_capability:
        return f"{need}; this one is {caps.compute_capability[0]}.{caps.compute_capability[1]}"
    return need
