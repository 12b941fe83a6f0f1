"""The one code path that turns a loaded pipeline into a configured one (trials and ``qco_tune.apply``)."""

from __future__ import annotations

from typing import Any

from qco_tune.core.config import TrialConfig
from qco_tune.measure.backends.compile import apply_compile, find_denoiser
from qco_tune.measure.backends.offload import apply_offload
from qco_tune.measure.backends.settings import apply_settings


def apply_config(pipe: Any, config: TrialConfig, device: str) -> Any:
    """Settings, then offload, then compile ``pipe`` in place as ``config`` says; returns ``pipe``.

    Quantization happens at load (``models.load_pipeline``), but for a torchao denoiser whose QKV projections are
    fused: the settings quantize it right after fusing (``calls.settings.fast_path_settings``). The settings
    (fused QKV projections, channels-last denoiser, layerwise casting, attention backend, VAE tiling, slicing
    and channels-last, TF32) come first because layerwise casting changes the weights that offloading moves;
    offloading comes before compilation so that compiled code sees the offloading hooks it will run with.
    """
    if config.settings():
        apply_settings(pipe, config, find_denoiser(pipe))
    apply_offload(pipe, config, device)
    apply_compile(pipe, config)
    return pipe
