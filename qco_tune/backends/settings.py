"""The settings knobs of a configuration (layerwise casting, attention backend, VAE tiling, slicing and
channels-last, TF32) as calls, written once as data.

The data part is stdlib only: the exporter writes these calls as source, and ``apply_settings`` makes
the same calls on a loaded pipeline, so the snippet and the trial cannot disagree (as
``qco_tune.quantconfigs`` does for quantization).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from qco_tune.config import TrialConfig
from qco_tune.pycode import Name, Value

Target = Literal["torch", "denoiser", "vae"]
CHANNELS_LAST = Name("torch", "channels_last")


@dataclass(frozen=True)
class SettingCall:
    """``target.method(*args, **kwargs)``: ``torch`` itself, the pipeline's denoiser, or its VAE."""

    target: Target
    method: str
    args: tuple[Value, ...] = ()
    kwargs: tuple[tuple[str, Value], ...] = ()


def process_settings(config: TrialConfig) -> tuple[SettingCall, ...]:
    """Process-wide settings, made before the pipeline loads (TF32)."""
    if config.tf32:
        return (SettingCall("torch", "set_float32_matmul_precision", ("high",)),)
    return ()


def pipeline_settings(config: TrialConfig, dtype: str) -> tuple[SettingCall, ...]:
    """Calls on the loaded pipeline's components, in order; ``dtype`` is what the denoiser computes in.

    Layerwise casting comes first: it casts the weights, which offloading and compilation (made
    after these) must see in their stored dtype.
    """
    calls = []
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


def moves_after_settings(config: TrialConfig) -> bool:
    """Whether the pipeline moves to the device after the settings rather than right after loading.

    Layerwise casting stores the denoiser in float8 on the host first, so that the device never
    holds its full-precision weights.
    """
    return config.layerwise_casting != "none"


# -- at run time --------------------------------------------------------------------------------------


def apply_process_settings(config: TrialConfig) -> None:
    """Make ``process_settings(config)`` (process-wide; a trial is its own process)."""
    import torch

    for call in process_settings(config):
        _invoke(torch, call)


def apply_settings(pipe: Any, config: TrialConfig, denoiser: str) -> None:
    """Make the process and pipeline settings of ``config`` on ``pipe`` (whose denoiser is ``denoiser``).

    Raises ``ValueError`` naming the setting when the pipeline has no VAE, or its VAE lacks the method.
    """
    apply_process_settings(config)
    calls = pipeline_settings(config, _dtype_of(getattr(pipe, denoiser)))
    for call in calls:
        target = getattr(pipe, denoiser) if call.target == "denoiser" else getattr(pipe, "vae", None)
        if target is None:
            raise ValueError(f"{call.method}: {type(pipe).__name__} has no VAE")
        if not hasattr(target, call.method):
            raise ValueError(f"{call.method}: {type(target).__name__} has no such method")
        _invoke(target, call)


def _dtype_of(module: Any) -> str:
    """The dtype a diffusers model computes in (its ``dtype``), as a torch attribute name."""
    return str(getattr(module, "dtype", "torch.bfloat16")).removeprefix("torch.")


def _invoke(target: Any, call: SettingCall) -> Any:
    from qco_tune.quantconfigs import instantiate

    args = [instantiate(a) for a in call.args]
    kwargs = {k: instantiate(v) for k, v in call.kwargs}
    return getattr(target, call.method)(*args, **kwargs)


__all__ = [
    "SettingCall",
    "apply_process_settings",
    "apply_settings",
    "moves_after_settings",
    "pipeline_settings",
    "process_settings",
]
