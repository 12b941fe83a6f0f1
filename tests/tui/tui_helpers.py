"""Helpers shared by the TUI tests (imported by name: tests/tui is on sys.path)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
L40S = "FAKE L40S 48GB (fake backend)"


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async Pilot scenario from a plain test function."""
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def subprocess_env() -> dict[str, str]:
    """The environment for a child process that imports qco_tune and the fake backend."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
