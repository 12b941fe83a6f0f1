"""Loading and saving a study's portable compile artefacts in the trial child (torch's "mega-cache").

``load_artifacts`` runs before the first call of a compiling trial: it hands every file of this
process's key (GPU kind, torch, Triton) to ``torch.compiler.load_cache_artifacts``, which writes the
entries into Inductor's (empty) caches, so compilation finds them. ``save_artifacts`` runs after the
first call: ``torch.compiler.save_cache_artifacts`` returns what this process compiled *or* hit
(torch records cache hits too), so one file holds all a configuration needs. Files and layout:
``qco_tune.core.compile_artifacts``.

Bad input never fails a trial: a file of another key is not loaded (a one-line notice); one that is
cut short, altered, or that torch cannot read is set aside as ``*.corrupt`` and this trial, compiling
afresh, writes its configuration's file again. torch 2.7+ has both calls (2.11 on the GPU machines).
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qco_tune.core.compile_artifacts import (
    ArtifactError,
    ArtifactKey,
    artifact_files,
    config_file_name,
    header_key,
    read_artifact,
    set_aside,
    write_artifact,
)
from qco_tune.core.records import TrialRequest

__all__ = ["ArtifactReport", "current_key", "load_artifacts", "save_artifacts"]


def triton_version() -> str:
    """Triton's installed version (read from its metadata, without importing it), or ``none``."""
    for name in ("triton", "pytorch-triton", "pytorch-triton-rocm", "pytorch-triton-xpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "none"


def current_key(device: str) -> ArtifactKey:
    """This process's key: the GPU's name (``cpu`` for CPU trials), torch's and Triton's versions."""
    import torch

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return ArtifactKey(gpu=gpu, torch=str(torch.__version__), triton=triton_version())


@dataclass
class ArtifactReport:
    """What ``extra["compile_cache"]["artifacts"]`` records for one trial."""

    dir: str
    key: dict[str, str]
    loaded: list[dict[str, Any]] = field(default_factory=list)
    """Files loaded: name, bytes, the configuration that made them."""
    load_s: float = 0.0
    notices: list[str] = field(default_factory=list)
    """One line per file not loaded (other key, corrupt, unreadable), and per file set aside."""
    saved: dict[str, Any] | None = None
    """The file this trial wrote: name, bytes, seconds, torch's entry counts; None when nothing was saved."""

    @property
    def loaded_bytes(self) -> int:
        return sum(int(item["bytes"]) for item in self.loaded)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dir": self.dir,
            "key": self.key,
            "loaded": self.loaded,
            "loaded_files": len(self.loaded),
            "loaded_bytes": self.loaded_bytes,
            "load_s": round(self.load_s, 4),
            "notices": self.notices,
            "saved": self.saved,
        }


def _notice(report: ArtifactReport, text: str) -> None:
    report.notices.append(text)
    print(f"qco-tune: {text}", flush=True)  # the trial's log (the parent keeps the output's tail)


def load_artifacts(request: TrialRequest, key: ArtifactKey) -> ArtifactReport | None:
    """Load every artefact of ``key`` from the request's study folder; None when the request has none."""
    if not request.compile_artifacts_dir or request.config.compile == "none":
        return None
    import torch.compiler

    study = Path(request.compile_artifacts_dir)
    folder = study / key.folder
    report = ArtifactReport(dir=str(folder), key=key.to_dict())
    others = sorted(p.name for p in study.iterdir() if p.is_dir() and p.name != key.folder) if study.is_dir() else []
    if others:
        count = sum(len(artifact_files(study / name)) for name in others)
        if count:
            _notice(report, f"{count} compile artefact file(s) of other keys not loaded ({', '.join(others)})")
    start = time.perf_counter()
    for path in artifact_files(folder):
        try:
            header, blob = read_artifact(path)
        except (ArtifactError, OSError) as exc:
            _notice(report, f"compile artefact set aside: {exc}")
            _set_aside(path, report)
            continue
        theirs = header_key(header)
        why = key.mismatch(theirs)
        if why:  # copied or renamed into this folder: its header says where it was made
            _notice(report, f"compile artefact {path.name} not loaded: made with {why}")
            continue
        try:
            info = torch.compiler.load_cache_artifacts(blob)
        except Exception as exc:  # torch could not use it: rebuilt by whichever trial compiles it next
            info, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = "torch could not read it"
        if info is None:
            _notice(report, f"compile artefact set aside: {path.name}: {error}"[:300])
            _set_aside(path, report)
            continue
        report.loaded.append({"file": path.name, "bytes": len(blob), "config": header.get("config")})
    report.load_s = time.perf_counter() - start
    return report


def _set_aside(path: Path, report: ArtifactReport) -> None:
    try:
        set_aside(path)
    except OSError as exc:  # read-only folder: it stays, and is refused again next time
        report.notices.append(f"could not set {path.name} aside: {exc}")


def save_artifacts(request: TrialRequest, report: ArtifactReport, key: ArtifactKey) -> None:
    """Write what this process compiled or hit as the configuration's file (unless it holds the same already)."""
    import torch.compiler

    start = time.perf_counter()
    result = torch.compiler.save_cache_artifacts()
    if result is None:
        report.saved = None
        report.notices.append("torch recorded no compile artefacts (nothing to save)")
        return
    blob, info = result
    path = Path(report.dir) / config_file_name(request.config.canonical().key())
    entries = {kind: len(items) for kind, items in info.artifacts.items() if items}
    saved: dict[str, Any] = {"file": path.name, "bytes": len(blob), "entries": entries}
    try:
        header, old = read_artifact(path) if path.exists() else (None, None)
    except (ArtifactError, OSError):
        header, old = None, None
    if old == blob and header is not None and not key.mismatch(header_key(header)):
        saved["unchanged"] = True
    else:
        try:
            write_artifact(
                path,
                blob,
                key,
                config=request.config.describe(),
                config_key=request.config.canonical().key(),
                trial=request.trial_number,
            )
        except OSError as exc:
            report.notices.append(f"could not write compile artefact {path.name}: {exc}")
            return
    saved["save_s"] = round(time.perf_counter() - start, 4)
    report.saved = saved
