"""Loading a pipeline for a trial: resolve the folder, quantize at load, place it on the device."""

from __future__ import annotations

import os
from typing import Any

from qco_tune.calls.quantconfigs import quantizes_on_device
from qco_tune.calls.settings import moves_after_settings
from qco_tune.core import paths
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import ModelInfo
from qco_tune.measure.backends.dtypes import torch_dtype
from qco_tune.measure.backends.materialize import materialize_preset
from qco_tune.measure.backends.quantization import build_quantization_config


def resolve_model_path(model: ModelInfo, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """What to pass to ``from_pretrained``: a materialised preset folder, a local folder or a hub id.

    A hub model without ``path`` loads by id from the local Hugging Face cache (never downloaded).
    Presets are materialised under ``cache_dir`` (default: ``qco_tune.core.paths.cache_dir()``).
    """
    if model.source == "preset":
        return str(materialize_preset(model.reference, cache_dir or paths.cache_dir()).path)
    if model.path:
        return model.path
    if model.source == "hub":
        return model.reference
    raise ValueError(f"local model {model.reference!r} has no path")


def load_pipeline(
    model: ModelInfo,
    config: TrialConfig,
    dtype: str,
    device: str,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Load ``model`` offline with ``config``'s quantization; move it to ``device`` unless it will be offloaded.

    Nothing is downloaded (``local_files_only``). Offloaded pipelines stay on the CPU for
    ``apply_offload`` to place, and so do pipelines whose denoiser is cast layerwise first
    (``settings.moves_after_settings``); quantization is validated before any weights are read. A
    backend that quantizes on the GPU (torchao int4) loads with ``device_map=device``.
    """
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA GPU")
    quantization_config = build_quantization_config(config, model, dtype)
    path = resolve_model_path(model, cache_dir)

    from diffusers import DiffusionPipeline

    kwargs: dict[str, Any] = {_dtype_kwarg(): torch_dtype(dtype), "local_files_only": True}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if quantizes_on_device(config):
        kwargs["device_map"] = device
    pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
    if not config.is_offloaded and not moves_after_settings(config):
        pipe.to(device)
    return pipe


def _dtype_kwarg() -> str:
    """``dtype`` where diffusers accepts it (``torch_dtype`` is deprecated there), else ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"
