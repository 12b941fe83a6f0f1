"""A study's portable compile artefacts: where they live, how one file is keyed, written and checked.

torch's "mega-cache" (``torch.compiler.save_cache_artifacts`` / ``load_cache_artifacts``, torch 2.7+)
serialises the Inductor FX graph, AOT autograd and autotuning entries that a process compiled or
hit, as one blob that another process loads into its (empty) caches before compiling: the first
call then skips most of the compilation (H200, FLUX.1-dev transformer, regional compile: 22% of the
cold first call). The per-study Inductor/Triton folders (``measure.backends.compile_cache``) serve trials on
the same host; these files travel with the study to a new host.

Layout (``study_dir`` is what the parent hands the child in ``TrialRequest.compile_artifacts_dir``)::

    <root>/<study slug>-<hash>/<gpu>-torch-<version>-triton-<version>/<config hash>.qco-artifact

``root`` is ``<db stem>.compile-artifacts/`` beside a SQLite storage file, else
``<cache>/compile-artifacts/`` (PostgreSQL, in-memory SQLite), unless given (``--compile-artifacts``).

One file is a header line (JSON: format, GPU kind, torch and Triton versions, byte count, sha256,
configuration) then the blob. It is written to a temporary name and renamed, so a reader never sees
half a file; one copied by hand and cut short, or edited, fails its byte count or sha256 and is set
aside (``*.corrupt``); one from another GPU kind, torch or Triton is refused by its header, wherever
it lies. Stdlib only: the study loop and ``export`` use it without torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qco_tune.core.paths import cache_dir

__all__ = [
    "ArtifactError",
    "ArtifactKey",
    "artifacts_root",
    "config_file_name",
    "read_artifact",
    "study_artifacts_dir",
    "write_artifact",
]

MAGIC = b"QCO-COMPILE-ARTIFACT"
"""First bytes of every file; the header's JSON follows on the same line."""
FORMAT = 1
SUFFIX = ".qco-artifact"
CORRUPT_SUFFIX = ".corrupt"
ROOT_SUFFIX = ".compile-artifacts"
"""``<db stem>.compile-artifacts`` beside a SQLite storage file."""
CACHE_SUBDIR = "compile-artifacts"
"""``<cache>/compile-artifacts`` for storages that are not a local file."""
HEADER_MAX_BYTES = 64 * 1024


class ArtifactError(ValueError):
    """A file that cannot be loaded: not an artefact, cut short, or not matching its checksum."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


@dataclass(frozen=True)
class ArtifactKey:
    """What compiled artefacts are valid for: one GPU kind, one torch build, one Triton build."""

    gpu: str
    """The device name (``torch.cuda.get_device_name``), or ``cpu``."""
    torch: str
    triton: str
    """Triton's version, or ``none`` where it is not installed."""

    @property
    def folder(self) -> str:
        """``NVIDIA-H200-torch-2.11.0-cu130-triton-3.5.0``: the key as one file name."""
        return f"{_slug(self.gpu)}-torch-{_slug(self.torch)}-triton-{_slug(self.triton)}"

    def to_dict(self) -> dict[str, str]:
        return {"gpu": self.gpu, "torch": self.torch, "triton": self.triton}

    def mismatch(self, other: ArtifactKey) -> str | None:
        """How ``other`` (a file's key) differs from this one (this process), or None when it matches."""
        parts = [
            f"{name} {theirs} (here {ours})"
            for name, ours, theirs in (
                ("GPU", self.gpu, other.gpu),
                ("torch", self.torch, other.torch),
                ("Triton", self.triton, other.triton),
            )
            if ours != theirs
        ]
        return ", ".join(parts) or None


def artifacts_root(storage_url: str | None, explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder (absolute) holding the compile artefacts of a storage's studies.

    ``explicit`` when given; else ``<db stem>.compile-artifacts`` beside a SQLite file (copy it with the
    database to carry a study to another host); else ``<cache>/compile-artifacts`` (PostgreSQL: each
    host keeps its own unless ``explicit`` names a shared folder).
    """
    if explicit:
        return Path(explicit).expanduser().absolute()
    url = storage_url or ""
    if url.startswith("sqlite") and ":///" in url:
        path_text = url.split(":///", 1)[1].split("?", 1)[0]
        if path_text and path_text != ":memory:":
            db = Path(path_text).expanduser().absolute()  # absolute: a trial's child may run elsewhere
            return db.with_name(db.stem + ROOT_SUFFIX)
    return (cache_dir() / CACHE_SUBDIR).absolute()


def study_artifacts_dir(root: Path, study: str) -> Path:
    """``<root>/<study slug>-<hash>``: one study's artefacts (a short hash keeps names that slug alike apart)."""
    digest = hashlib.sha256(study.encode()).hexdigest()[:8]
    return root / f"{_slug(study)}-{digest}"


def config_file_name(config_key: str) -> str:
    """The file of one configuration's artefacts: a hash of ``TrialConfig.key()``."""
    return hashlib.sha256(config_key.encode()).hexdigest()[:16] + SUFFIX


def write_artifact(path: Path, blob: bytes, key: ArtifactKey, **meta: Any) -> int:
    """Write ``blob`` under ``key`` atomically (a temporary file in the same folder, then a rename).

    ``meta`` (configuration, trial, ...) goes into the header. Returns the file's size.
    """
    header = {
        "format": FORMAT,
        **key.to_dict(),
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        **meta,
    }
    line = MAGIC + b" " + json.dumps(header, sort_keys=True, default=str).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(line)
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(line) + len(blob)


def read_header(path: Path) -> dict[str, Any]:
    """The header of the file at ``path``; ``ArtifactError`` when it has none."""
    with open(path, "rb") as f:
        line = f.readline(HEADER_MAX_BYTES)
    return _parse_header(line, path)


def _parse_header(line: bytes, path: Path) -> dict[str, Any]:
    if not line.startswith(MAGIC + b" ") or not line.endswith(b"\n"):
        raise ArtifactError(f"{path.name}: not a qco-tune compile artefact (no header)")
    try:
        header = json.loads(line[len(MAGIC) + 1 :])
    except ValueError:
        raise ArtifactError(f"{path.name}: unreadable header") from None
    found = header.get("format") if isinstance(header, dict) else None
    if not isinstance(header, dict) or found != FORMAT:
        raise ArtifactError(f"{path.name}: unknown artefact format {found!r}")
    return header


def header_key(header: dict[str, Any]) -> ArtifactKey:
    return ArtifactKey(str(header.get("gpu")), str(header.get("torch")), str(header.get("triton")))


def read_artifact(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header, blob) of the file at ``path``, the blob checked against the header's byte count and sha256.

    Raises ``ArtifactError`` for a file without a valid header, cut short, too long or altered.
    """
    data = path.read_bytes()
    end = data.find(b"\n", 0, HEADER_MAX_BYTES)
    header = _parse_header(data[: end + 1] if end >= 0 else data[:HEADER_MAX_BYTES], path)
    blob = data[end + 1 :]
    expected = header.get("bytes")
    if len(blob) != expected:
        raise ArtifactError(f"{path.name}: {len(blob)} bytes where the header says {expected} (cut short?)")
    if hashlib.sha256(blob).hexdigest() != header.get("sha256"):
        raise ArtifactError(f"{path.name}: sha256 does not match its header (altered or corrupt)")
    return header, blob


def artifact_files(folder: Path) -> list[Path]:
    """The artefact files in ``folder`` (temporary and set-aside files excluded), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith(".") and p.is_file())


def set_aside(path: Path) -> Path:
    """Rename a bad file to ``<name>.corrupt`` (replacing an older one), so it is not read again."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    os.replace(path, target)
    return target
