"""What the GPU recording tools beside this module share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_recorded(name: str, folders: list[Path]) -> dict[str, Any] | None:
    """The first ``NAME.json`` in ``folders`` recorded with status ok: a case that need not run again."""
    for folder in folders:
        try:
            data = json.loads((folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            continue
        if data.get("status") == "ok":
            return data
    return None
