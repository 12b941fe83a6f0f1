"""What this machine can run: ``python -m qco_tune.backends.probe`` prints one JSON line of ``Capabilities``.

Run in a child process so that the parent never initialises CUDA.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
from importlib import metadata

from qco_tune.config import Capabilities

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


def probe() -> Capabilities:
    """Probe CUDA, GPU 0, quantization libraries, compilers and versions."""
    import torch

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
    return Capabilities(
        cuda=cuda,
        backends=quantization_backends(cuda),
        compile=can_compile(cuda),
        versions=tuple(sorted(versions(cuda).items())),
        host=socket.gethostname(),
        **gpu,  # type: ignore[arg-type]
    )


def main() -> int:
    from qco_tune.backends.child import quiet_libraries

    quiet_libraries()
    print(json.dumps(probe().to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
