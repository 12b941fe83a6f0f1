"""The quantization config each ``QuantBackend`` stands for, as data. Stdlib only.

One table serves both sides: the exporter writes these calls as Python source, and ``instantiate``
builds the same objects at run time, so the code a user pastes and the objects a trial loads with
cannot disagree. Each entry names a config class that diffusers and transformers both export under
the same name; where the two classes take different keyword arguments (quanto), the transformers
ones are given separately.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

from qco_tune.core.config import ComponentInfo, TrialConfig
from qco_tune.core.pycode import Call, Code, Name, Value

Library = Literal["diffusers", "transformers"]

LIBRARY_OF_ROLE: dict[str, Library] = {"denoiser": "diffusers", "vae": "diffusers", "text_encoder": "transformers"}
"""Which library's config class a component of each role takes; other roles are not quantized."""

BFLOAT16 = Name("torch", "bfloat16")


@dataclass(frozen=True)
class BackendConfig:
    """How one ``QuantBackend`` is configured in diffusers and transformers."""

    class_name: str
    """The config class, the same name in ``diffusers`` and ``transformers``."""
    args: tuple[Value, ...] = ()
    kwargs: tuple[tuple[str, Value], ...] = ()
    transformers_kwargs: tuple[tuple[str, Value], ...] | None = None
    """The transformers class's keyword arguments where they differ from the diffusers ones."""
    pipeline_backend: str | None = None
    """``PipelineQuantizationConfig(quant_backend=...)`` name, where both classes take the same keywords."""
    on_device: bool = False
    """Quantizes on the GPU while loading (``from_pretrained(..., device_map=device)``): its packed
    layout is made by a CUDA kernel."""

    def call(self, library: Library) -> Call:
        """The config object for ``library``'s class, as a call to write or to ``instantiate``."""
        kwargs = self.kwargs if library == "diffusers" or self.transformers_kwargs is None else self.transformers_kwargs
        return Call(Name(library, self.class_name), self.args, kwargs)


def _bnb_4bit(quant_type: str) -> BackendConfig:
    # bf16 compute as in the diffusers docs; the 4-bit storage is what saves memory.
    kwargs = (("load_in_4bit", True), ("bnb_4bit_quant_type", quant_type), ("bnb_4bit_compute_dtype", BFLOAT16))
    return BackendConfig("BitsAndBytesConfig", kwargs=kwargs, pipeline_backend="bitsandbytes_4bit")


def _quanto(weights: str) -> BackendConfig:
    return BackendConfig(
        "QuantoConfig", kwargs=(("weights_dtype", weights),), transformers_kwargs=(("weights", weights),)
    )


BACKEND_CONFIGS: dict[str, BackendConfig] = {
    "bnb_nf4": _bnb_4bit("nf4"),
    "bnb_fp4": _bnb_4bit("fp4"),
    "bnb_int8": BackendConfig(
        "BitsAndBytesConfig", kwargs=(("load_in_8bit", True),), pipeline_backend="bitsandbytes_8bit"
    ),
    # Both TorchAoConfig classes take a torchao config object (strings are refused), but their
    # signatures differ, so PipelineQuantizationConfig(quant_backend="torchao") is refused.
    "torchao_int8wo": BackendConfig(
        "TorchAoConfig", args=(Call(Name("torchao.quantization", "Int8WeightOnlyConfig")),)
    ),
    "torchao_fp8dq": BackendConfig(
        "TorchAoConfig",
        args=(
            Call(
                Name("torchao.quantization", "Float8DynamicActivationFloat8WeightConfig"),
                kwargs=(("granularity", Call(Name("torchao.quantization", "PerRow"))),),
            ),
        ),
    ),
    # torchao 0.18's default int4 layout ("plain") needs the mslk package; the tinygemm layout runs
    # on torch's own int4 kernel (CUDA, compute capability 8.0+, bfloat16) and is packed on the GPU.
    "torchao_int4wo": BackendConfig(
        "TorchAoConfig",
        args=(
            Call(
                Name("torchao.quantization", "Int4WeightOnlyConfig"),
                kwargs=(("group_size", 128), ("int4_packing_format", "tile_packed_to_4d")),
            ),
        ),
        on_device=True,
    ),
    "torchao_fp8wo": BackendConfig(
        "TorchAoConfig", args=(Call(Name("torchao.quantization", "Float8WeightOnlyConfig")),)
    ),
    "torchao_int8dq": BackendConfig(
        "TorchAoConfig", args=(Call(Name("torchao.quantization", "Int8DynamicActivationInt8WeightConfig")),)
    ),
    # The two QuantoConfig classes name the weight dtype differently.
    "quanto_int8": _quanto("int8"),
    "quanto_int4": _quanto("int4"),
    "quanto_fp8": _quanto("float8"),
}


def quantizes_on_device(config: TrialConfig) -> bool:
    """Whether loading ``config`` must quantize on the GPU (``device_map``): a backend packs for a CUDA kernel."""
    return any(BACKEND_CONFIGS[b].on_device for _, b in config.quantization if b in BACKEND_CONFIGS)


def library_of(component: ComponentInfo) -> Library:
    """The library whose config class quantizes ``component``; ``ValueError`` for roles that are not quantized."""
    library = LIBRARY_OF_ROLE.get(component.role)
    if library is None:
        raise ValueError(
            f"cannot quantize {component.name!r}: its role is {component.role!r}, not a model with weights to quantize"
        )
    return library


def config_call(backend: str, library: Library) -> Call:
    """The quantization config of ``backend`` for a ``library`` component; ``ValueError`` for an unknown backend."""
    try:
        entry = BACKEND_CONFIGS[backend]
    except KeyError:
        raise ValueError(f"no quantization config for backend {backend!r}") from None
    return entry.call(library)


def instantiate(value: Value) -> Any:
    """The object ``value`` describes: imports its modules and makes its calls."""
    if isinstance(value, Name):
        return getattr(importlib.import_module(value.module), value.attr)
    if isinstance(value, Call):
        func = instantiate(value.func)
        return func(*(instantiate(a) for a in value.args), **{k: instantiate(v) for k, v in value.kwargs})
    if isinstance(value, list):
        return [instantiate(v) for v in value]
    if isinstance(value, dict):
        return {k: instantiate(v) for k, v in value.items()}
    if isinstance(value, Code):
        raise TypeError(f"cannot instantiate source text {value.text!r}")
    return value


def build_config(backend: str, library: Library) -> Any:
    """The quantization config object of ``backend`` for ``library`` (imports that library)."""
    return instantiate(config_call(backend, library))
