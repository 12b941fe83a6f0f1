"""The settings knobs of a configuration (fused QKV projections, channels-last denoiser, layerwise casting,
attention backend, VAE tiling, slicing and channels-last, TF32) as calls, written once as data.

The data part is stdlib only: the exporter writes these calls as source, and ``apply_settings`` makes
(``measure.backends.settings``) the same calls on a loaded pipeline, so the snippet and the trial cannot disagree (as
``qco_tune.calls.quantconfigs`` does for quantization).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qco_tune.calls.quantconfigs import QUANTIZE_AFTER_LOAD, quantize_after_load_call, quantized_after_fusing
from qco_tune.core.config import TrialConfig
from qco_tune.core.pycode import Name, Value

Target = Literal["torch", "denoiser", "vae"]
CHANNELS_LAST = Name("torch", "channels_last")


@dataclass(frozen=True)
class SettingCall:
    """``target.method(*args, **kwargs)``: ``torch`` itself, the pipeline's denoiser, or its VAE; with ``function``,
    ``function(target, *args, **kwargs)`` (a library function that changes the target in place)."""

    target: Target
    method: str
    args: tuple[Value, ...] = ()
    kwargs: tuple[tuple[str, Value], ...] = ()
    function: Name | None = None


def process_settings(config: TrialConfig) -> tuple[SettingCall, ...]:
    """Process-wide settings, made before the pipeline loads (TF32)."""
    if config.tf32:
        return (SettingCall("torch", "set_float32_matmul_precision", ("high",)),)
    return ()


def pipeline_settings(config: TrialConfig, dtype: str, denoiser: str) -> tuple[SettingCall, ...]:
    """Calls on the loaded pipeline's components, in order; ``dtype`` is what the denoiser ``denoiser`` computes in.

    Layerwise casting comes first: it casts the weights, which offloading and compilation (made
    after these) must see in their stored dtype.
    """
    calls = list(fast_path_settings(config, denoiser))  # before layerwise casting, which must see the fused projections
    if config.layerwise_casting != "none":
        kwargs = (("storage_dtype", Name("torch", config.layerwise_casting)), ("compute_dtype", Name("torch", dtype)))
        calls.append(SettingCall("denoiser", "enable_layerwise_casting", kwargs=kwargs))
    if config.attention_backend != "native":
        calls.append(SettingCall("denoiser", "set_attention_backend", (config.attention_backend,)))
    if config.vae_tiling:
        calls.append(SettingCall("vae", "enable_tiling"))
    if config.vae_slicing:
        calls.append(SettingCall("vae", "enable_slicing"))
    if config.vae_channels_last:
        calls.append(SettingCall("vae", "to", kwargs=(("memory_format", CHANNELS_LAST),)))
    return tuple(calls)


def fast_path_settings(config: TrialConfig, denoiser: str) -> tuple[SettingCall, ...]:
    """Fused QKV projections, the denoiser's channels-last format, then torchao's ``quantize_`` of a denoiser
    loaded unquantized for fusing (``quantconfigs.quantized_after_fusing``): huggingface/flux-fast's order."""
    calls = []
    if config.fuse_qkv:
        calls.append(SettingCall("denoiser", "fuse_qkv_projections"))
    if config.denoiser_channels_last:
        calls.append(SettingCall("denoiser", "to", kwargs=(("memory_format", CHANNELS_LAST),)))
    backend = quantized_after_fusing(config, denoiser)
    if backend is not None:
        config_call = quantize_after_load_call(backend)
        calls.append(SettingCall("denoiser", QUANTIZE_AFTER_LOAD.attr, (config_call,), function=QUANTIZE_AFTER_LOAD))
    return tuple(calls)


def moves_after_settings(config: TrialConfig) -> bool:
    """Whether the pipeline moves to the device after the settings rather than right after loading.

    Layerwise casting stores the denoiser in float8 on the host first, so that the device never
    holds its full-precision weights.
    """
    return config.layerwise_casting != "none"


__all__ = [
    "CHANNELS_LAST",
    "SettingCall",
    "fast_path_settings",
    "moves_after_settings",
    "pipeline_settings",
    "process_settings",
]
