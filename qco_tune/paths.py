"""Where qco-tune keeps files that are not results: materialised presets and compilation caches."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "QCO_CACHE"


def cache_dir() -> Path:
    """``$QCO_CACHE``, else ``$XDG_CACHE_HOME/qco-tune``, else ``~/.cache/qco-tune``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "qco-tune"
