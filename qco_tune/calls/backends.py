"""The one registry of quantization backends: for each ``QuantBackend``, the library that provides it,
its config class and arguments in diffusers and transformers, its bytes per parameter, and what it
needs of the device. Stdlib only.

The search space (availability and the rules), the memory model, the exporter, the trial child and
``qco_tune.apply`` all read this table, as diffusers' ``AUTO_QUANTIZER_MAPPING`` maps a
quantization method to its quantizer and config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from qco_tune.core.config import QuantBackend
from qco_tune.core.pycode import Call, Name, Value

QuantLibrary = Literal["bitsandbytes", "torchao", "quanto"]
"""A quantization library, as ``Capabilities.backends`` names it."""


@dataclass(frozen=True)
class LibraryInfo:
    """A quantization library: the module that must import, and the ``quant_method`` it leaves on a model."""

    module: str
    quant_method: str


LIBRARIES: dict[QuantLibrary, LibraryInfo] = {
    "bitsandbytes": LibraryInfo("bitsandbytes", "bitsandbytes"),
    "torchao": LibraryInfo("torchao", "torchao"),
    "quanto": LibraryInfo("optimum.quanto", "quanto"),
}

Library = Literal["diffusers", "transformers"]
"""The library whose config class quantizes a component (by its role)."""

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

    def quantize_call(self) -> Call | None:
        """The config object of ``torchao.quantization.quantize_(module, config)``, which quantizes a model that is
        already loaded (the one argument of ``TorchAoConfig``); None where a library quantizes only at load."""
        if self.class_name == "TorchAoConfig" and self.args and isinstance(self.args[0], Call):
            return self.args[0]
        return None


def _bnb_4bit(quant_type: str) -> BackendConfig:
    # bf16 compute as in the diffusers docs; the 4-bit storage is what saves memory.
    kwargs = (("load_in_4bit", True), ("bnb_4bit_quant_type", quant_type), ("bnb_4bit_compute_dtype", BFLOAT16))
    return BackendConfig("BitsAndBytesConfig", kwargs=kwargs, pipeline_backend="bitsandbytes_4bit")


def _quanto(weights: str) -> BackendConfig:
    return BackendConfig(
        "QuantoConfig", kwargs=(("weights_dtype", weights),), transformers_kwargs=(("weights", weights),)
    )


def _torchao(config_class: str, kwargs: tuple[tuple[str, Value], ...] = (), on_device: bool = False) -> BackendConfig:
    return BackendConfig(
        "TorchAoConfig", args=(Call(Name("torchao.quantization", config_class), kwargs=kwargs),), on_device=on_device
    )


@dataclass(frozen=True)
class QuantBackendInfo:
    """One quantization backend: who provides it, how it is configured, what it costs and needs."""

    library: QuantLibrary
    config: BackendConfig
    bytes_per_param: float
    """Bytes per parameter of a quantized component, scales and unquantized layers included."""
    needs_cuda: bool = False
    """Runs on a CUDA GPU only."""
    min_capability: tuple[int, int] | None = None
    """The CUDA compute capability its kernels need."""
    loads_on_device: bool = False
    """``from_pretrained`` quantizes on the GPU and leaves the component there, whatever its later
    placement (the bitsandbytes quantizers of diffusers and transformers: ``update_device_map``)."""
    stays_on_device: bool = False
    """Its weights stay on the device when the pipeline is offloaded (bitsandbytes' ``Int8Params`` keeps
    its ``CB`` on the GPU when a parent module moves it)."""


FP8_MIN_CAPABILITY = (8, 9)
"""Ada and Hopper: float8 tensor cores."""
INT4_MIN_CAPABILITY = (8, 0)
"""Ampere: torchao's int4 (tinygemm) kernel."""


BACKEND_INFO: dict[str, QuantBackendInfo] = {
    "bnb_nf4": QuantBackendInfo("bitsandbytes", _bnb_4bit("nf4"), 0.56, needs_cuda=True, loads_on_device=True),
    "bnb_fp4": QuantBackendInfo("bitsandbytes", _bnb_4bit("fp4"), 0.56, needs_cuda=True, loads_on_device=True),
    "bnb_int8": QuantBackendInfo(
        "bitsandbytes",
        BackendConfig("BitsAndBytesConfig", kwargs=(("load_in_8bit", True),), pipeline_backend="bitsandbytes_8bit"),
        1.02,
        stays_on_device=True,
        needs_cuda=True,
        loads_on_device=True,
    ),
    # Both TorchAoConfig classes take a torchao config object (strings are refused), but their
    # signatures differ, so PipelineQuantizationConfig(quant_backend="torchao") is refused.
    "torchao_int8wo": QuantBackendInfo("torchao", _torchao("Int8WeightOnlyConfig"), 1.02),
    "torchao_fp8dq": QuantBackendInfo(
        "torchao",
        _torchao(
            "Float8DynamicActivationFloat8WeightConfig",
            (("granularity", Call(Name("torchao.quantization", "PerRow"))),),
        ),
        1.02,
        needs_cuda=True,
        min_capability=FP8_MIN_CAPABILITY,
    ),
    # torchao 0.18's default int4 layout ("plain") needs the mslk package; the tinygemm layout runs
    # on torch's own int4 kernel (CUDA, compute capability 8.0+, bfloat16) and is packed on the GPU.
    "torchao_int4wo": QuantBackendInfo(
        "torchao",
        _torchao("Int4WeightOnlyConfig", (("group_size", 128), ("int4_packing_format", "tile_packed_to_4d")), True),
        0.56,
        needs_cuda=True,
        min_capability=INT4_MIN_CAPABILITY,
    ),
    "torchao_fp8wo": QuantBackendInfo("torchao", _torchao("Float8WeightOnlyConfig"), 1.02),
    "torchao_int8dq": QuantBackendInfo("torchao", _torchao("Int8DynamicActivationInt8WeightConfig"), 1.02),
    # The two QuantoConfig classes name the weight dtype differently.
    "quanto_int8": QuantBackendInfo("quanto", _quanto("int8"), 1.02),
    "quanto_int4": QuantBackendInfo("quanto", _quanto("int4"), 0.56),
    "quanto_fp8": QuantBackendInfo("quanto", _quanto("float8"), 1.02),
}
"""Every quantization backend qco-tune knows (the values of ``QuantBackend`` but ``none``)."""

if set(BACKEND_INFO) != set(get_args(QuantBackend)) - {"none"}:  # pragma: no cover - a programming error
    raise ImportError("BACKEND_INFO and QuantBackend disagree")


def backends_of(library: QuantLibrary) -> frozenset[str]:
    """The backends ``library`` provides."""
    return frozenset(name for name, info in BACKEND_INFO.items() if info.library == library)


__all__ = [
    "BACKEND_INFO",
    "LIBRARIES",
    "BackendConfig",
    "Library",
    "LibraryInfo",
    "QuantBackendInfo",
    "QuantLibrary",
    "backends_of",
]
