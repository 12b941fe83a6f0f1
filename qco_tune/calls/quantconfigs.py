"""The quantization config each ``QuantBackend`` stands for, as data. Stdlib only.

One table serves both sides: the exporter writes these calls as Python source, and ``instantiate``
builds the same objects at run time, so the code a user pastes and the objects a trial loads with
cannot disagree. Each entry names a config class that diffusers and transformers both export under
the same name; where the two classes take different keyword arguments (quanto), the transformers
ones are given separately.
"""

from __future__ import annotations

import importlib
from typing import Any

from qco_tune.calls.backends import BACKEND_INFO, BackendConfig, Library
from qco_tune.core.config import TrialConfig
from qco_tune.core.pycode import Call, Code, Name, Value
from qco_tune.core.records import ComponentInfo

LIBRARY_OF_ROLE: dict[str, Library] = {"denoiser": "diffusers", "vae": "diffusers", "text_encoder": "transformers"}
"""Which library's config class a component of each role takes; other roles are not quantized."""

BACKEND_CONFIGS: dict[str, BackendConfig] = {name: info.config for name, info in BACKEND_INFO.items()}
"""Each backend's config class and arguments (from the registry, ``qco_tune.calls.backends``)."""


QUANTIZE_AFTER_LOAD = Name("torchao.quantization", "quantize_")
"""torchao's API that quantizes the ``nn.Linear`` modules of a loaded model in place."""


def quantized_after_fusing(config: TrialConfig, denoiser: str) -> str | None:
    """The denoiser's backend where it is quantized after its QKV projections are fused rather than at load; else None.

    huggingface/flux-fast's order: load unquantized, ``fuse_qkv_projections()``, then torchao's ``quantize_``, so
    that the fused ``to_qkv`` is quantized as one matmul. Fusing after loading quantized fails for every library
    (``search.rules.FUSED_QKV_QUANTIZED``); torchao is the one whose config also quantizes a loaded model.
    """
    backend = config.backend_for(denoiser)
    entry = BACKEND_CONFIGS.get(backend)
    if config.fuse_qkv and entry is not None and entry.quantize_call() is not None:
        return backend
    return None


def quantized_at_load(config: TrialConfig, denoiser: str) -> tuple[tuple[str, str], ...]:
    """``config.quantization`` without the denoiser where it is quantized after fusing (``quantized_after_fusing``)."""
    deferred = quantized_after_fusing(config, denoiser) is not None
    return tuple((c, b) for c, b in config.quantization if not (deferred and c == denoiser))


def quantize_after_load_call(backend: str) -> Call:
    """The config object ``quantize_`` takes for ``backend`` (its ``TorchAoConfig`` argument: one description)."""
    call = BACKEND_CONFIGS[backend].quantize_call()
    if call is None:
        raise ValueError(f"{backend} does not quantize a loaded model")
    return call


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
