"""Making the settings calls of ``qco_tune.calls.settings`` on a loaded pipeline (trials and ``qco_tune.apply``)."""

from __future__ import annotations

from typing import Any

from qco_tune.calls.quantconfigs import instantiate
from qco_tune.calls.settings import SettingCall, pipeline_settings, process_settings
from qco_tune.core.config import TrialConfig


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
    calls = pipeline_settings(config, _dtype_of(getattr(pipe, denoiser)), denoiser)
    for call in calls:
        target = getattr(pipe, denoiser) if call.target == "denoiser" else getattr(pipe, "vae", None)
        if target is None:
            raise ValueError(f"{call.method}: {type(pipe).__name__} has no VAE")
        if call.function is None and not hasattr(target, call.method):
            raise ValueError(f"{call.method}: {type(target).__name__} has no such method")
        _invoke(target, call)


def _dtype_of(module: Any) -> str:
    """The dtype a diffusers model computes in (its ``dtype``), as a torch attribute name."""
    return str(getattr(module, "dtype", "torch.bfloat16")).removeprefix("torch.")


def _invoke(target: Any, call: SettingCall) -> Any:
    args = [instantiate(a) for a in call.args]
    kwargs = {k: instantiate(v) for k, v in call.kwargs}
    if call.function is not None:
        return instantiate(call.function)(target, *args, **kwargs)
    return getattr(target, call.method)(*args, **kwargs)


__all__ = ["apply_process_settings", "apply_settings"]
