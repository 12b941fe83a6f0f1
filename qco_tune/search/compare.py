"""Comparing studies, typically the same spec measured on different GPUs. Headless and pure.

Configurations are matched across studies by ``TrialConfig.key()`` (the canonical configuration),
so the same recipe lines up even when it was trial 3 on one GPU and trial 17 on another. The
first study is the reference: speed-ups say how much faster each other study ran a configuration.
The TUI's compare screen and ``qco-tune compare`` both render a ``Comparison``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from qco_tune.core.config import TrialConfig
from qco_tune.core.errors import InputError
from qco_tune.search.pareto import ParetoSummary, TrialRow

_PREFERENCE = {"front": 0, "dominated": 1, "infeasible": 2, "failed": 3}
"""Which trial stands for a configuration when a study measured it more than once."""


@dataclass(frozen=True)
class ComparedConfig:
    """One configuration and the trial that stands for it in each study (None: not measured there)."""

    key: str
    config: TrialConfig
    rows: tuple[TrialRow | None, ...]

    def latency(self, i: int) -> float | None:
        row = self.rows[i]
        return row.latency_s if row is not None and row.category != "failed" else None

    def memory(self, i: int) -> int | None:
        row = self.rows[i]
        return row.memory_bytes if row is not None else None

    def speedup(self, i: int, reference: int = 0) -> float | None:
        """Latency in study ``reference`` / latency in study ``i`` (>1: study ``i`` is faster)."""
        a, b = self.latency(reference), self.latency(i)
        return a / b if a and b else None

    def on_front(self, i: int) -> bool:
        row = self.rows[i]
        return row is not None and row.category == "front"

    def feasible(self, i: int) -> bool:
        row = self.rows[i]
        return row is not None and row.feasible

    @property
    def measured_everywhere(self) -> bool:
        return all(r is not None and r.category != "failed" for r in self.rows)

    @property
    def baseline(self) -> str | None:
        return next((r.baseline for r in self.rows if r is not None and r.baseline), None)


@dataclass(frozen=True)
class Comparison:
    """Studies side by side: every configuration measured in at least one of them."""

    studies: tuple[str, ...]
    summaries: tuple[ParetoSummary, ...]
    configs: tuple[ComparedConfig, ...]
    """Measured in every study first, then the rest; each part by latency in the first study that has one."""

    @property
    def matched(self) -> tuple[ComparedConfig, ...]:
        """Configurations with a latency in every study."""
        return tuple(c for c in self.configs if c.measured_everywhere)

    def median_speedup(self, i: int, reference: int = 0) -> float | None:
        """Median over matched configurations of how much faster study ``i`` ran them than ``reference``."""
        ratios = [s for c in self.matched if (s := c.speedup(i, reference)) is not None]
        return statistics.median(ratios) if ratios else None

    def front_only_in(self, i: int) -> tuple[ComparedConfig, ...]:
        """On study ``i``'s Pareto front but on no other study's front (where the others measured it)."""
        return tuple(
            c
            for c in self.configs
            if c.on_front(i) and not any(c.on_front(j) for j in range(len(self.studies)) if j != i)
        )

    def front_unmeasured_in(self, i: int, j: int) -> tuple[ComparedConfig, ...]:
        """On study ``i``'s front and not (successfully) measured in study ``j``: what a replay would add."""
        return tuple(c for c in self.configs if c.on_front(i) and c.latency(j) is None)

    def best(self, i: int) -> TrialRow | None:
        return self.summaries[i].best


def _representative(rows: Sequence[TrialRow]) -> TrialRow:
    return min(
        rows, key=lambda r: (_PREFERENCE.get(r.category, 9), r.latency_s if r.latency_s is not None else float("inf"))
    )


def compare_summaries(named: Sequence[tuple[str, ParetoSummary]]) -> Comparison:
    """Match the finished trials of two or more studies by configuration."""
    if len(named) < 2:
        raise InputError("comparing needs at least two studies")
    names = tuple(n for n, _ in named)
    if len(set(names)) != len(names):
        raise InputError("each study can be compared only once")
    per_study: list[dict[str, TrialRow]] = []
    configs: dict[str, TrialConfig] = {}
    for _, summary in named:
        grouped: dict[str, list[TrialRow]] = {}
        for row in summary.rows:
            if row.config is None or row.category not in _PREFERENCE:
                continue
            key = row.config.key()
            grouped.setdefault(key, []).append(row)
            configs.setdefault(key, row.config.canonical())
        per_study.append({k: _representative(v) for k, v in grouped.items()})
    compared = [ComparedConfig(key, configs[key], tuple(s.get(key) for s in per_study)) for key in configs]

    def order(c: ComparedConfig) -> tuple[int, float]:
        first = next((lat for i in range(len(names)) if (lat := c.latency(i)) is not None), float("inf"))
        return (0 if c.measured_everywhere else 1, first)

    return Comparison(studies=names, summaries=tuple(s for _, s in named), configs=tuple(sorted(compared, key=order)))
