"""Quantization at load time: a ``TrialConfig``'s per-component backends as a ``PipelineQuantizationConfig``.

diffusers components (the denoiser, the VAE) get diffusers' config classes; transformers
components (the text encoders) get transformers' classes of the same name. ``quant_mapping`` is
used throughout because ``PipelineQuantizationConfig(quant_backend="quanto")`` is refused (the
diffusers and transformers ``QuantoConfig`` signatures differ). The config objects come from
``qco_tune.calls.quantconfigs``, the table the exporter writes its snippets from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qco_tune.calls.backends import BACKEND_INFO, FP8_MIN_CAPABILITY, INT4_MIN_CAPABILITY, LIBRARIES
from qco_tune.calls.quantconfigs import Library, build_config, library_of, quantized_at_load
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import ModelInfo

if TYPE_CHECKING:
    import torch
    from diffusers import PipelineQuantizationConfig

_DTYPES = ("bfloat16", "float16", "float32")


def build_quantization_config(
    config: TrialConfig, model: ModelInfo, dtype: str | torch.dtype
) -> PipelineQuantizationConfig | None:
    """The ``quantization_config`` for ``DiffusionPipeline.from_pretrained``; ``None`` where nothing quantizes at load.

    A denoiser quantized after fusing its QKV projections (``quantconfigs.quantized_after_fusing``) loads
    unquantized; its backend is checked here all the same.

    Raises ``ValueError`` naming the conflict when a component is not part of ``model`` or cannot be
    quantized (tokenizers, schedulers), when ``dtype`` is unknown, or when this machine cannot run a
    backend (bitsandbytes without CUDA, float8 below compute capability 8.9, a missing library).
    """
    dtype_name = _dtype_name(dtype)
    if not config.quantization:
        return None
    at_load = set(quantized_at_load(config, model.denoiser))
    mapping: dict[str, Any] = {}
    for component, backend in config.quantization:
        library = _library_of(model, component)
        _check_environment(backend, component, dtype_name)
        if (component, backend) in at_load:
            mapping[component] = build_config(backend, library)
    if not mapping:
        return None

    from diffusers import PipelineQuantizationConfig

    return PipelineQuantizationConfig(quant_mapping=mapping)


def _dtype_name(dtype: str | torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")
    return name


def _library_of(model: ModelInfo, component: str) -> Library:
    """Which library's config class a component needs, from its role in the pipeline."""
    names = [c.name for c in model.components]
    if component not in names:
        raise ValueError(
            f"cannot quantize {component!r}: {model.reference} has no such component (it has {', '.join(names)})"
        )
    return library_of(model.component(component))


def _check_environment(backend: str, component: str, dtype: str = "bfloat16") -> None:
    """Refuse, with the reason, backends this machine cannot run (before any weights load)."""
    import torch

    if backend == "torchao_int4wo":
        if not torch.cuda.is_available() or torch.cuda.get_device_capability() < INT4_MIN_CAPABILITY:
            raise ValueError(f"{component}: torchao_int4wo needs a CUDA GPU with compute capability >= 8.0")
        if dtype != "bfloat16":
            raise ValueError(f"{component}: torchao_int4wo quantizes bfloat16 weights only; the dtype is {dtype}")

    if backend.startswith("bnb_") and not torch.cuda.is_available():
        raise ValueError(f"{component}: {backend} needs a CUDA GPU (bitsandbytes quantizes on the GPU)")
    if backend == "torchao_fp8dq":
        if not torch.cuda.is_available():
            raise ValueError(f"{component}: torchao_fp8dq needs a CUDA GPU with compute capability >= 8.9")
        capability = torch.cuda.get_device_capability()
        if capability < FP8_MIN_CAPABILITY:
            raise ValueError(
                f"{component}: torchao_fp8dq needs compute capability >= 8.9; this GPU has "
                f"{capability[0]}.{capability[1]}"
            )
    module = LIBRARIES[BACKEND_INFO[backend].library].module
    try:
        __import__(module)
    except ImportError as exc:
        raise ValueError(f"{component}: {backend} needs {module}, which does not import here: {exc}") from exc
