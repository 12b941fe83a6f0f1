"""The console the text reports print to, and the cells and lines they share."""

from __future__ import annotations

import sys

from rich.console import Console

from qco_tune.search.pareto import SPEEDUP_DEFINITION, SPEEDUP_HEADER, ParetoSummary


def report_console() -> Console:
    """The console of the reports: no highlighting, and a wide page when stdout is not a terminal."""
    # Into a file or a pipe, tables keep their columns (a terminal's width applies on a terminal).
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def seconds(value: float | None) -> str:
    """A duration in seconds to the millisecond, or "-" when unknown."""
    return f"{value:.3f} s" if value is not None else "-"


def print_speedup(console: Console, summary: ParetoSummary) -> None:
    """The study's one speed-up figure, with its definition (``list`` and the TUI show the same figure)."""
    speedup = summary.speedup
    if speedup is not None:
        console.print(f"{SPEEDUP_HEADER}: {speedup.describe()}  [dim]({SPEEDUP_DEFINITION})[/]")
