"""What this machine can run: ``python -m qco_tune.measure.backends.probe`` prints one JSON line of ``Capabilities``.

Run in a child process so that the parent never initialises CUDA.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import TypeVar

from qco_tune.core.config import ATTENTION_BACKENDS
from qco_tune.core.records import Capabilities

PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "bitsandbytes", "torchao", "optimum-quanto")
C_COMPILERS = ("cc", "gcc", "clang")


def _works(module: str) -> bool:
    """The module imports without error (an installed but broken library does not count)."""
    try:
        __import__(module)
    except Exception:
        return False
    return True


def quantization_backends(cuda: bool) -> tuple[str, ...]:
    """Quantization libraries usable here; bitsandbytes only with CUDA (it quantizes on the GPU)."""
    found = []
    if cuda and _works("bitsandbytes"):
        found.append("bitsandbytes")
    if _works("torchao.quantization"):
        found.append("torchao")
    if _works("optimum.quanto"):
        found.append("quanto")
    return tuple(found)


SMOKE_BACKENDS = ("torchao_int4wo", "torchao_fp8wo", "torchao_int8dq", "quanto_int4", "quanto_fp8")
"""Quantization backends whose kernels the probe runs once on a small layer (installed is not enough)."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def attention_backends(cuda: bool) -> tuple[tuple[str, ...], dict[str, str]]:
    """(usable backends, {``attention_backend=NAME``: why not}) of diffusers' attention dispatch.

    Each candidate must be known to the installed diffusers, pass its requirement check (the package
    is installed and recent enough) and run one small bfloat16 attention call on the GPU with
    FLUX.1's head size; ``native`` always runs. Without CUDA only ``native`` is probed (the space
    says why the others are missing).
    """
    usable, unusable = ["native"], dict[str, str]()
    if not cuda:
        return tuple(usable), unusable
    import torch

    try:
        from diffusers.models.attention_dispatch import (
            AttentionBackendName,
            _check_attention_backend_requirements,
            dispatch_attention_fn,
        )
    except ImportError as exc:
        return tuple(usable), {f"attention_backend={n}": _first_line(exc) for n in ATTENTION_BACKENDS[1:]}
    for name in ATTENTION_BACKENDS[1:]:
        key = f"attention_backend={name}"
        try:
            backend = AttentionBackendName(name)
        except ValueError:
            unusable[key] = "this diffusers version does not have it"
            continue
        try:
            _check_attention_backend_requirements(backend)
            q, k, v = (torch.randn(1, 256, 2, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            out = dispatch_attention_fn(q, k, v, backend=backend)
            torch.cuda.synchronize()
            if not torch.isfinite(out).all():
                raise RuntimeError("the attention output is not finite")
        except Exception as exc:  # whatever stops the backend here is its reason
            unusable[key] = _first_line(exc)
            continue
        usable.append(name)
    return tuple(usable), unusable


def quantization_smoke(cuda: bool, backends: tuple[str, ...]) -> dict[str, str]:
    """{backend: why not} for the ``SMOKE_BACKENDS`` whose library is installed but whose kernel fails
    on a small bfloat16 layer here (torchao int4 is probed on CUDA only: its layout is packed there)."""
    import torch

    from qco_tune.calls.backends import BACKEND_INFO
    from qco_tune.calls.quantconfigs import BACKEND_CONFIGS

    device = "cuda" if cuda else "cpu"
    failed = {}
    for backend in SMOKE_BACKENDS:
        if BACKEND_INFO[backend].library not in backends or (backend == "torchao_int4wo" and not cuda):
            continue
        try:
            layer = torch.nn.Sequential(torch.nn.Linear(256, 256)).to(device, torch.bfloat16)
            _quantize_layer(layer, backend, BACKEND_CONFIGS[backend])
            out = layer(torch.randn(4, 256, device=device, dtype=torch.bfloat16))
            if not torch.isfinite(out).all():
                raise RuntimeError("the output is not finite")
        except Exception as exc:  # whatever stops the kernel here is the reason
            failed[backend] = _first_line(exc)
    return failed


def _quantize_layer(layer: object, backend: str, entry: object) -> None:
    """Quantize ``layer`` in place as the backend's config says (torchao ``quantize_``, quanto ``quantize``)."""
    from qco_tune.calls.quantconfigs import instantiate

    if backend.startswith("torchao_"):
        from torchao.quantization import quantize_

        quantize_(layer, instantiate(entry.args[0]))  # type: ignore[attr-defined]
    else:
        from optimum.quanto import freeze, qfloat8, qint4, qint8, quantize

        weights = {"int8": qint8, "int4": qint4, "float8": qfloat8}[dict(entry.kwargs)["weights_dtype"]]  # type: ignore[attr-defined]
        quantize(layer, weights=weights)
        freeze(layer)


def can_compile(cuda: bool) -> bool:
    """torch.compile can build kernels: Triton for CUDA, a C/C++ compiler for the CPU."""
    if cuda:
        return _works("triton")
    if any(shutil.which(name) for name in C_COMPILERS):
        return True
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(shutil.which(get_cpp_compiler()))
    except Exception:  # private API: absent or failing means no compiler was found
        return False


def versions(cuda: bool) -> dict[str, str]:
    """Installed versions of the libraries a trial depends on, plus the NVIDIA driver and CUDA."""
    import torch

    import qco_tune

    found = {"qco_tune": qco_tune.__version__}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):  # not installed: not listed
            found[package] = metadata.version(package)
    if torch.version.cuda:
        found["cuda"] = torch.version.cuda
    if cuda:
        driver = _driver_version()
        if driver:
            found["nvidia_driver"] = driver
    return found


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML: the driver stays unknown
        return None


T = TypeVar("T")

STAGE_SECONDS: dict[str, float] = {}
"""Seconds each stage of the last ``probe`` took (printed beside the capabilities: a slow probe says why)."""


def _timed(stage: str, work: Callable[[], T]) -> T:
    start = time.monotonic()
    try:
        return work()
    finally:
        STAGE_SECONDS[stage] = round(time.monotonic() - start, 3)


def probe() -> Capabilities:
    """Probe CUDA, GPU 0, quantization libraries, compilers and versions."""
    torch = _timed("importing torch", lambda: __import__("torch"))

    cuda = torch.cuda.is_available()
    gpu: dict[str, object] = {}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "gpu_name": props.name,
            "gpu_count": torch.cuda.device_count(),
            "total_memory": int(props.total_memory),
            "compute_capability": (props.major, props.minor),
        }
    backends = _timed("importing the quantization libraries", lambda: quantization_backends(cuda))
    attention, unusable = _timed("checking the attention backends", lambda: attention_backends(cuda))
    unusable.update(_timed("checking the quantization kernels", lambda: quantization_smoke(cuda, backends)))
    return Capabilities(
        cuda=cuda,
        backends=backends,
        attention_backends=attention,
        unusable=tuple(sorted(unusable.items())),
        compile=can_compile(cuda),
        versions=tuple(sorted(versions(cuda).items())),
        host=socket.gethostname(),
        **gpu,  # type: ignore[arg-type]
    )


def main() -> int:
    from qco_tune.measure.backends.libraries import quiet_libraries

    quiet_libraries()
    caps = probe()
    print(json.dumps({"stage_seconds": STAGE_SECONDS}), flush=True)
    print(json.dumps(caps.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
