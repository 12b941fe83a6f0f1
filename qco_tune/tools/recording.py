"""What the GPU recording tools beside this module share: their command line, their time budget, the cases
already recorded, and the check for a GPU."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

RESULTS = Path("studies", "results")
"""Where the records live, from the repository root (the tools run there)."""
DEFAULT_BUDGET_S = 540.0
"""A command's time before it stops starting cases: under a GPU machine's ten-minute limit."""


class NamedCase(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def default(self) -> bool: ...


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


def case_parser(doc: str | None, cases: Sequence[NamedCase], out_help: str) -> argparse.ArgumentParser:
    """The options every case-recording tool takes: OUT, --only, --budget-s, --recorded, --rerun, --tiny."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help=out_help)
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"cases to run: {', '.join(c.name for c in cases)}")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=DEFAULT_BUDGET_S,
        help=f"stop before this many seconds ({DEFAULT_BUDGET_S:.0f})",
    )
    parser.add_argument("--recorded", type=Path, action="append", help="folders of earlier results (skipped)")
    parser.add_argument("--rerun", action="store_true", help="run cases even when recorded")
    parser.add_argument("--tiny", action="store_true", help="a dry run of the plumbing with the tiny presets (CPU too)")
    return parser


@dataclass(frozen=True)
class Command:
    """One command of a recording tool: where it writes, what was recorded before, its cache and its time."""

    out: Path
    recorded: list[Path]
    cache: Path
    started: float
    deadline: float

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, name: str, need: float) -> bool:
        """True when ``need`` seconds fit in what is left; else say why the command stops before ``name``."""
        left = self.left()
        if need > left:
            print(f"stopping before {name}: it needs about {need:.0f} s and {left:.0f} s are left", flush=True)
            return False
        return True

    def done(self) -> None:
        print(f"done in {time.monotonic() - self.started:.0f} s; {self.out / 'summary.md'}", flush=True)


def open_command(args: argparse.Namespace, default_recorded: Path) -> Command:
    """The command ``case_parser``'s arguments describe: OUT created, the cache ``QCO_CACHE`` (default
    ``/dev/shm/qco``, RAM-backed disk on the GPU machine)."""
    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    recorded = args.recorded if args.recorded is not None else [default_recorded]
    cache = Path(os.environ.setdefault("QCO_CACHE", "/dev/shm/qco"))
    return Command(out, recorded, cache, started, started + args.budget_s)


def chosen_cases(parser: argparse.ArgumentParser, cases: Sequence[NamedCase], only: list[str] | None) -> list[Any]:
    """The cases ``--only`` names (a usage error for an unknown one), else the default ones."""
    unknown = set(only or ()) - {c.name for c in cases}
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; cases: {', '.join(c.name for c in cases)}")
    return [c for c in cases if (c.name in only if only else c.default)]


def needs_gpu(cuda: bool, tiny: bool, why: str = "these runs need one") -> bool:
    """True (after saying so) when there is no CUDA GPU and this is not a ``--tiny`` dry run."""
    if cuda or tiny:
        return False
    print(f"no CUDA GPU here: {why} (--tiny tries the plumbing on the CPU)", file=sys.stderr)
    return True
