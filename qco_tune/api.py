"""Applying a tuned configuration in a user's own code, through the code path the trials run.

``from_pretrained`` loads with quantization (at load time, but for a torchao denoiser whose QKV projections are
fused: it loads unquantized and is quantized after fusing, huggingface/flux-fast's order), then makes the
settings (fused QKV projections, channels-last denoiser, layerwise casting, attention backend, VAE tiling,
slicing and channels-last, TF32), offloads and compiles (after the Inductor profile's flags); ``apply``
does the same to a pipeline that is already loaded. Both call
``qco_tune.measure.backends`` exactly as a trial's child process does (``load_pipeline``, then
``apply_config``), so what the tuner measured, what ``qco-tune export`` writes and what these do
cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from qco_tune.calls.backends import BACKEND_INFO, LIBRARIES
from qco_tune.calls.dynamo import DENOISER_NAMES
from qco_tune.calls.quantconfigs import quantized_after_fusing
from qco_tune.core.config import TrialConfig
from qco_tune.core.errors import InputError
from qco_tune.core.records import ModelInfo
from qco_tune.export.formats import load_config

ConfigSource = TrialConfig | Mapping[str, Any] | str | os.PathLike[str]
"""A ``TrialConfig``, its ``to_dict`` form, or a JSON/TOML file written by ``qco-tune export --format``."""

"""``quant_method`` of the diffusers/transformers quantization config that each backend family writes."""


def default_device() -> str:
    """``cuda`` where torch sees a GPU (the tuner measures there), else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def apply(pipe: Any, config: ConfigSource, *, device: str | None = None) -> Any:
    """Make the settings of ``config``, then offload and compile the loaded ``pipe`` in place; returns ``pipe``.

    Sets the ``torch._dynamo.config`` values compilation needs, the Inductor profile's ``torch._inductor.config``
    flags, and TF32 and diffusers' default
    attention backend where ``config`` says so (all process-wide), as the trial did.
    Raises ``ValueError`` when ``config`` quantizes a component that ``pipe`` did not load
    quantized with that backend (use ``from_pretrained``), when the offloading needs CUDA and
    ``device`` is not a GPU, or when the configuration is invalid or from a newer qco-tune.
    """
    from qco_tune.measure.backends.apply import apply_config

    trial_config = load_config(config)
    check_quantized(pipe, trial_config)
    return apply_config(pipe, trial_config, device or default_device())


def from_pretrained(
    model: str | os.PathLike[str],
    config: ConfigSource,
    *,
    dtype: str = "bfloat16",
    device: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> Any:
    """Load ``model`` (a hub id in the local Hugging Face cache, at ``revision`` if given, a local diffusers
    folder or a preset name) quantized as ``config`` says, then offload and compile it; returns the pipeline.

    Nothing is downloaded, as in the trials: fetch a hub model first (``hf download``).
    Raises ``ModelError`` for a model that is not there and ``ValueError`` for a configuration this
    machine cannot run (bitsandbytes or float8 without a suitable GPU) or that is invalid.
    """
    from qco_tune.measure.backends.apply import apply_config
    from qco_tune.measure.backends.models import load_pipeline

    trial_config = load_config(config)
    device = device or default_device()
    pipe = load_pipeline(resolve(model, revision), trial_config, dtype, device, cache_dir)
    return apply_config(pipe, trial_config, device)


def resolve(model: str | os.PathLike[str], revision: str | None = None) -> ModelInfo:
    """The ``ModelInfo`` of a preset name (random weights), a local folder or a cached hub id (at ``revision``)."""
    from qco_tune.core.modelref import resolve_model
    from qco_tune.core.presets import is_preset

    reference = os.fspath(model)
    return resolve_model(reference, "random" if is_preset(reference) else "real", revision)


def check_quantized(pipe: Any, config: TrialConfig) -> None:
    """``ValueError`` unless every component ``config`` quantizes was loaded quantized with that backend."""
    denoiser = next((n for n in DENOISER_NAMES if getattr(pipe, n, None) is not None), None)
    after_fusing = quantized_after_fusing(config, denoiser) if denoiser else None
    for component, backend in config.quantization:
        module = getattr(pipe, component, None)
        if module is None:
            raise InputError(f"the configuration quantizes {component!r}, which this pipeline does not have")
        method = _quant_method(module)
        if component == denoiser and after_fusing is not None:
            if method is not None:  # fusing a quantized model fails: it is quantized after fusing, as measured
                raise InputError(
                    f"the configuration fuses the QKV projections of {component!r} and then quantizes it with "
                    f"{backend} (torchao's quantize_), but it was loaded with {method}: load it unquantized, or "
                    "load with qco_tune.from_pretrained(model, config)"
                )
            continue
        expected = LIBRARIES[BACKEND_INFO[backend].library].quant_method
        if method != expected:
            loaded = f"loaded with {method}" if method else "loaded without quantization"
            raise InputError(
                f"the configuration quantizes {component!r} with {backend}, but it was {loaded}: quantization "
                "happens at load time, so load with qco_tune.from_pretrained(model, config)"
            )


def _quant_method(module: Any) -> str | None:
    """The quantization method a diffusers or transformers model was loaded with, or None."""
    quantizer = getattr(module, "hf_quantizer", None)
    quant_config = getattr(quantizer, "quantization_config", None)
    if quant_config is None:
        quant_config = getattr(getattr(module, "config", None), "quantization_config", None)
    if quant_config is None:
        return None
    method = quant_config.get("quant_method") if isinstance(quant_config, dict) else quant_config.quant_method
    return str(getattr(method, "value", method))
