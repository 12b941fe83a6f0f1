"""Materialise a preset before a study's first trial, in a child process (the parent never touches CUDA).

Headless: the build runs ``python -m qco_tune.measure.backends.materialize NAME --phases`` and reports its
steps through ``on_phase``; the caller checks free disk first (``presets.cache.check_disk``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qco_tune.measure.launcher import kill_group, launch, phase_of

MATERIALIZE_TIMEOUT_S = 3600.0


class MaterializeError(RuntimeError):
    """The build failed; the message is its last error line."""


@dataclass(frozen=True)
class MaterializeResult:
    path: Path
    built: bool
    seconds: float | None


def materialize_in_child(
    name: str,
    cache_dir: str | Path,
    *,
    device: str = "auto",
    on_phase: Callable[[str], None] | None = None,
    timeout: float = MATERIALIZE_TIMEOUT_S,
) -> MaterializeResult:
    """Build (or find) preset ``name`` under ``cache_dir`` in a fresh process; its steps go to ``on_phase``."""
    args = (name, "--cache-dir", str(cache_dir), "--device", device, "--phases")
    proc = launch("qco_tune.measure.backends.materialize", *args)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            phase = phase_of(line)
            if phase is not None:
                if on_phase is not None:
                    on_phase(phase)
            elif line.strip():
                lines.append(line)
        proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        kill_group(proc)
        raise
    result = next((line for line in reversed(lines) if line.startswith("{")), None)
    if proc.returncode != 0 or result is None:
        last = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "")
        raise MaterializeError(f"materialising preset {name!r} failed: {last.removeprefix('error: ')}")
    data = json.loads(result)
    return MaterializeResult(Path(data["path"]), bool(data["built"]), data.get("seconds"))
