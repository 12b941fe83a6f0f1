"""Quantization at load time: a ``TrialConfig``'s per-component backends as a ``PipelineQuantizationConfig``.

diffusers components (the denoiser, the VAE) get diffusers' config classes; transformers
components (the text encoders) get transformers' classes of the same name. ``quant_mapping`` is
used throughout because ``PipelineQuantizationConfig(quant_backend="quanto")`` is refused (the
diffusers and transformers ``QuantoConfig`` signatures differ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from qco_tune.config import ModelInfo, TrialConfig

if TYPE_CHECKING:
    import torch
    from diffusers import PipelineQuantizationConfig

Library = Literal["diffusers", "transformers"]

_QUANTIZABLE_ROLES = {"denoiser": "diffusers", "vae": "diffusers", "text_encoder": "transformers"}
_DTYPES = ("bfloat16", "float16", "float32")
FP8_MIN_CAPABILITY = (8, 9)


def build_quantization_config(
    config: TrialConfig, model: ModelInfo, dtype: str | torch.dtype
) -> PipelineQuantizationConfig | None:
    """The ``quantization_config`` for ``DiffusionPipeline.from_pretrained``; ``None`` when nothing is quantized.

    Raises ``ValueError`` naming the conflict when a component is not part of ``model`` or cannot be
    quantized (tokenizers, schedulers), when ``dtype`` is unknown, or when this machine cannot run a
    backend (bitsandbytes without CUDA, float8 below compute capability 8.9, a missing library).
    """
    _dtype_name(dtype)
    if not config.quantization:
        return None
    mapping: dict[str, Any] = {}
    for component, backend in config.quantization:
        library = _library_of(model, component)
        _check_environment(backend, component)
        mapping[component] = _BUILDERS[backend](library)

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
    role = model.component(component).role
    if role not in _QUANTIZABLE_ROLES:
        raise ValueError(f"cannot quantize {component!r}: its role is {role!r}, not a model with weights to quantize")
    library: Library = _QUANTIZABLE_ROLES[role]  # type: ignore[assignment]
    return library


def _check_environment(backend: str, component: str) -> None:
    """Refuse, with the reason, backends this machine cannot run (before any weights load)."""
    import torch

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
    module = {"bnb": "bitsandbytes", "torchao": "torchao", "quanto": "optimum.quanto"}[backend.split("_")[0]]
    try:
        __import__(module)
    except ImportError as exc:
        raise ValueError(f"{component}: {backend} needs {module}, which does not import here: {exc}") from exc


# -- one builder per backend: (library) -> that library's quantization config ---------------------


def _config_class(library: Library, name: str) -> Any:
    if library == "diffusers":
        import diffusers

        return getattr(diffusers, name)
    import transformers

    return getattr(transformers, name)


def _bnb_4bit(quant_type: str) -> Callable[[Library], Any]:
    def build(library: Library) -> Any:
        import torch

        # bf16 compute as in the diffusers docs; the 4-bit storage is what saves memory.
        return _config_class(library, "BitsAndBytesConfig")(
            load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_compute_dtype=torch.bfloat16
        )

    return build


def _bnb_int8(library: Library) -> Any:
    return _config_class(library, "BitsAndBytesConfig")(load_in_8bit=True)


def _torchao_int8wo(library: Library) -> Any:
    from torchao.quantization import Int8WeightOnlyConfig

    # Both libraries take a torchao config object (strings are refused).
    return _config_class(library, "TorchAoConfig")(Int8WeightOnlyConfig())


def _torchao_fp8dq(library: Library) -> Any:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    return _config_class(library, "TorchAoConfig")(Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))


def _quanto_int8(library: Library) -> Any:
    cls = _config_class(library, "QuantoConfig")
    # The two QuantoConfig classes name the weight dtype differently.
    return cls(weights_dtype="int8") if library == "diffusers" else cls(weights="int8")


_BUILDERS: dict[str, Callable[[Library], Any]] = {
    "bnb_nf4": _bnb_4bit("nf4"),
    "bnb_fp4": _bnb_4bit("fp4"),
    "bnb_int8": _bnb_int8,
    "torchao_int8wo": _torchao_int8wo,
    "torchao_fp8dq": _torchao_fp8dq,
    "quanto_int8": _quanto_int8,
}
