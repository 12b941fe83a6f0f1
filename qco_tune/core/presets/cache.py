"""Where materialised presets live, whether one is complete, and whether there is room to write one.

Stdlib only, so the study loop and the CLI can check (and refuse, with the figures) before any GPU
time is spent. A preset ``NAME`` is materialised as a diffusers folder ``<cache>/presets/NAME/``
(``<cache>`` is ``QCO_CACHE``, else the XDG cache: ``qco_tune.core.paths.cache_dir``); the marker file
``.qco-preset.json`` is written last, so a folder without it is an interrupted build.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from qco_tune.core.presets import Preset, get_preset
from qco_tune.core.units import format_size

__all__ = [
    "BUILDER_VERSION",
    "MARKER",
    "DiskSpaceError",
    "check_disk",
    "disk_needed",
    "is_materialized",
    "marker",
    "preset_folder",
]

MARKER = ".qco-preset.json"
"""Written last into a materialised preset; its presence means the folder is complete."""
BUILDER_VERSION = 3
"""Bump when what the builder makes changes (weights, tokenizers, layout), so stale folders are rebuilt."""
DISK_MARGIN = 1.05
DISK_EXTRA_BYTES = 256 * 2**20
"""Room for tokenizers, configs and filesystem overhead beyond the weights."""


class DiskSpaceError(ValueError):
    """Not enough free disk to materialise a preset; the message says how much is needed and free."""


def preset_folder(name: str, cache_dir: str | os.PathLike[str]) -> Path:
    """``<cache_dir>/presets/<name>`` (the preset's canonical lower-case name)."""
    return Path(cache_dir) / "presets" / get_preset(name).name


def marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The completion marker of a materialised folder, or None when absent or unreadable."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_materialized(name: str, cache_dir: str | os.PathLike[str]) -> bool:
    """The preset's folder is complete and made by this builder version."""
    data = marker(preset_folder(name, cache_dir))
    return data is not None and data.get("builder_version") == BUILDER_VERSION


def disk_needed(preset: Preset) -> int:
    """Bytes to reserve for materialising ``preset``: its weights in the saved dtype plus a margin."""
    return int(preset.saved_bytes() * DISK_MARGIN) + DISK_EXTRA_BYTES


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the cache may not exist yet)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(name: str, cache_dir: str | os.PathLike[str]) -> None:
    """Raise ``DiskSpaceError`` when the cache's filesystem has less free space than the preset needs.

    Nothing to check when the preset is materialised already.
    """
    if is_materialized(name, cache_dir):
        return
    preset = get_preset(name)
    root = Path(cache_dir) / "presets"
    need = disk_needed(preset)
    free = shutil.disk_usage(_existing(root)).free
    if free < need:
        raise DiskSpaceError(
            f"materialising preset {preset.name!r} needs {format_size(need)} of free disk in {root} "
            f"({preset.blueprint.save_dtype} weights, {preset.total_params / 1e9:.2f} B parameters), and only "
            f"{format_size(free)} is free there: free some space or point QCO_CACHE at a larger disk (e.g. /dev/shm)"
        )
