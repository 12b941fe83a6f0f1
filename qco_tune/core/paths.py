"""Where qco-tune keeps files that are not results: materialised presets and compilation caches."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

CACHE_ENV = "QCO_CACHE"


def cache_dir() -> Path:
    """``$QCO_CACHE``, else ``$XDG_CACHE_HOME/qco-tune``, else ``~/.cache/qco-tune``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "qco-tune"


def trial_dir_prefix(pid: int | None = None) -> str:
    """The name prefix of the temporary folders of the trials run by process ``pid`` (default: this one),
    so that after that process is killed, the recovery of its trial can remove what it left."""
    return f"qco-trial-{pid if pid is not None else os.getpid()}-"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def study_compile_cache_dir(study: str, root: Path | None = None) -> Path:
    """``<cache>/compile/<study>``: the Inductor and Triton caches of one study's trials on this host."""
    digest = hashlib.sha256(study.encode()).hexdigest()[:8]
    return (root if root is not None else cache_dir()) / "compile" / f"{_slug(study)}-{digest}"


def compile_cache_dir(study: str, gpu: str, torch_version: str | None, root: Path | None = None) -> Path:
    """``<cache>/compile/<study>/<gpu>-torch-<version>``: Inductor's and Triton's caches of one study's trials.

    Keyed by study, GPU kind and torch version, as compiled artefacts are valid for one GPU kind and one
    torch (and Triton) build. A short hash keeps two names that slug alike apart.
    """
    kind = f"{_slug(gpu)}-torch-{_slug(torch_version or 'unknown')}"
    return study_compile_cache_dir(study, root) / kind
