"""Where a trial's torch.compile artefacts are cached, and whether the cache was cold or warm.

Inductor keeps compiled FX graphs (``FXGraphCache``), AOT autograd artefacts (``AOTAutogradCache``),
autotuning results and generated kernels on disk under ``TORCHINDUCTOR_CACHE_DIR``, and Triton its
kernels under ``TRITON_CACHE_DIR``; a later process that meets the same graph with the same shapes,
settings, torch/Triton build and GPU loads them instead of compiling. ``configure`` points both at
the directory the study chose (``TrialRequest.compile_cache_dir``) and turns the FX graph and autograd
caches on; it must run before torch is imported, as torch reads these variables at import.

Stdlib only at import: ``report`` reads torch's counters lazily, after the trial.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qco_tune.core.records import TrialRequest

__all__ = ["CompileCache", "configure"]

ENV_CACHE_DIR = "TORCHINDUCTOR_CACHE_DIR"
ENV_TRITON_DIR = "TRITON_CACHE_DIR"
ENV_SWITCHES = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "1", "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}
COUNTERS = {
    "fx_graph_hits": ("inductor", "fxgraph_cache_hit"),
    "fx_graph_misses": ("inductor", "fxgraph_cache_miss"),
    "fx_graph_bypasses": ("inductor", "fxgraph_cache_bypass"),
    "autograd_hits": ("aot_autograd", "autograd_cache_hit"),
    "autograd_misses": ("aot_autograd", "autograd_cache_miss"),
}
"""``extra["compile_cache"]`` key → torch's counter (group, name)."""


def count_files(root: Path) -> int:
    """Regular files under ``root`` (0 when it does not exist)."""
    if not root.is_dir():
        return 0
    return sum(len(files) for _, _, files in os.walk(root))


@dataclass
class CompileCache:
    """The cache a trial compiles into, as it was found before the trial started."""

    path: Path
    files_before: int
    shared: bool
    """False for a fresh cache made for this trial only (removed by ``cleanup``)."""

    @property
    def state(self) -> str:
        """``warm`` when the cache held artefacts before the trial started, else ``cold``."""
        return "warm" if self.files_before else "cold"

    def report(self) -> dict[str, Any]:
        """What ``extra["compile_cache"]`` records: where, cold or warm, files, and torch's hit/miss counters."""
        data: dict[str, Any] = {
            "dir": str(self.path),
            "state": self.state,
            "shared": self.shared,
            "files_before": self.files_before,
            "files_after": count_files(self.path),
        }
        data.update(_counters())
        return data

    def cleanup(self) -> None:
        if not self.shared:
            shutil.rmtree(self.path, ignore_errors=True)


def _counters() -> dict[str, int]:
    import sys

    if "torch" not in sys.modules:
        return {}
    try:
        from torch._dynamo.utils import counters
    except Exception:  # private API: no counters, the file counts still tell cold from warm
        return {}
    return {key: int(counters[group][name]) for key, (group, name) in COUNTERS.items()}


def configure(request: TrialRequest) -> CompileCache | None:
    """Point Inductor and Triton at the trial's cache; None when the request leaves torch's defaults.

    Call before torch is imported. A ``fresh_compile_cache`` request gets a new empty folder.
    """
    if request.compile_cache_dir:
        path, shared = Path(request.compile_cache_dir), True
        path.mkdir(parents=True, exist_ok=True)
    elif request.fresh_compile_cache:
        path, shared = Path(tempfile.mkdtemp(prefix="qco-compile-")), False
    else:
        return None
    cache = CompileCache(path=path, files_before=count_files(path), shared=shared)
    os.environ[ENV_CACHE_DIR] = str(path / "inductor")
    os.environ[ENV_TRITON_DIR] = str(path / "triton")
    os.environ.update(ENV_SWITCHES)
    return cache
