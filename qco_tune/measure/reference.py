"""The study's reference output on this machine: its metadata file, read without torch or numpy.

``measure.backends.fidelity`` writes the reference (output, latents, then this file last) and
compares trials with it; the study loop only asks whether a complete one is here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

META_FILE = "reference.json"
"""Written last: its presence means the reference is complete."""


def load_meta(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The reference's metadata, or None when there is no complete reference in ``folder``."""
    try:
        data = json.loads((Path(folder) / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


__all__ = ["META_FILE", "load_meta"]
