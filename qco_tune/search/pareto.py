"""A typed summary of a study: the feasible Pareto front of latency against peak memory, and the rest.

The CLI's ``show``, the TUI and the exporter all read this one object, so they agree on which
trial is "best". Trials are read duck-typed (Optuna's ``FrozenTrial``), so this module needs no
optuna import and can be tested with plain data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    DEFERRED_STATUS,
    MEASUREMENT_ATTR,
    MEMORY_ATTR,
    PREDICTED_ATTR,
    PREDICTED_RAW_ATTR,
    REASON_ATTR,
    REMEASURE_OF_ATTR,
    STATUS_ATTR,
)
from qco_tune.core.records import Measurement

Category = Literal["front", "dominated", "infeasible", "failed", "skipped", "running", "waiting", "superseded"]
"""``superseded``: a trial measured with fewer steps and extrapolated, since measured again at the full
step count (the later trial, with ``remeasure_of`` set, holds the authoritative figures)."""


class TrialLike(Protocol):
    number: int
    state: Any
    values: list[float] | None
    user_attrs: dict[str, Any]
    params: dict[str, Any]

    @property
    def constraints(self) -> Any: ...


@dataclass(frozen=True)
class TrialRow:
    """One trial as every view shows it."""

    number: int
    category: Category
    config: TrialConfig | None
    measurement: Measurement | None
    latency_s: float | None
    memory_bytes: int | None
    """The peak that the budget counts (see ``StudySpec.memory_metric``)."""
    baseline: str | None
    """Name of the seeded guide recipe, when this trial is one."""
    reason: str | None
    predicted_bytes: int | None
    predicted_raw_bytes: int | None = None
    """The prediction before calibration (trials recorded before the model calibrated itself have none)."""
    remeasure_of: int | None = None
    """The extrapolated trial this one measured again at the full step count."""

    @property
    def feasible(self) -> bool:
        return self.category in ("front", "dominated")


@dataclass(frozen=True)
class ParetoSummary:
    """Rows of a study sorted into categories, the fastest feasible trial and the speed-ups over baselines."""

    rows: tuple[TrialRow, ...]
    budget_bytes: int | None
    front: tuple[TrialRow, ...] = ()
    """Feasible and not dominated, sorted by latency."""
    best: TrialRow | None = None
    """The fastest feasible trial."""
    baselines: Mapping[str, TrialRow] = field(default_factory=dict)
    speedups: Mapping[str, float] = field(default_factory=dict)
    """Baseline latency / best latency, per seeded recipe that finished feasibly."""

    def by_category(self, category: Category) -> tuple[TrialRow, ...]:
        return tuple(r for r in self.rows if r.category == category)

    @property
    def counts(self) -> Counts:
        return Counts.of(self)

    @property
    def speedup(self) -> Speedup | None:
        """The study's one speed-up (``SPEEDUP_DEFINITION``), as ``run``, ``show``, ``list`` and the TUI show it."""
        if self.best is None or not self.speedups:
            return None
        recipe = min(self.speedups, key=lambda name: self.speedups[name])
        return Speedup(self.speedups[recipe], recipe, self.baselines[recipe].number, self.best.number)

    def row(self, number: int) -> TrialRow | None:
        return next((r for r in self.rows if r.number == number), None)


SPEEDUP_HEADER = "speed-up vs fastest recipe in budget"
"""The column header wherever the study's speed-up is shown (``list``, ``show``, the TUI's studies screen)."""


SPEEDUP_DEFINITION = (
    "speed-up = latency of the fastest seeded recipe that fits the budget ÷ latency of the best feasible trial"
)


@dataclass(frozen=True)
class Speedup:
    """The best feasible trial against the fastest seeded recipe within budget (``SPEEDUP_DEFINITION``)."""

    ratio: float
    recipe: str
    recipe_number: int
    best_number: int

    def describe(self) -> str:
        """``1.42× · quantization (torchao_int8wo) #1``, or that the best is that recipe itself."""
        if self.recipe_number == self.best_number:
            return f"1.00× · the best is {self.recipe!r} #{self.recipe_number} itself"
        return f"{self.ratio:.2f}× · {self.recipe} #{self.recipe_number}"


@dataclass(frozen=True)
class Counts:
    """A study's trials by what became of them: the one count that ``run``, ``show``, ``list`` and the TUI show.

    ``ran`` counts every trial that ran to an end (within budget, over it, failed, or superseded by its
    re-measurement), the reference included; ``skipped`` ones never ran (a rule, the memory model, a repeat).
    """

    running: int = 0
    feasible: int = 0
    infeasible: int = 0
    failed: int = 0
    skipped: int = 0
    waiting: int = 0
    superseded: int = 0

    @property
    def ran(self) -> int:
        return self.feasible + self.infeasible + self.failed + self.superseded

    @property
    def total(self) -> int:
        return self.ran + self.running + self.skipped + self.waiting

    def describe(self) -> str:
        """``9 ran (9 within budget, 0 over, 0 failed), 2 skipped before running``."""
        text = (
            f"{self.ran} ran ({self.feasible} within budget, {self.infeasible} over, {self.failed} failed), "
            f"{self.skipped} skipped before running"
        )
        extra = [f"{n} {what}" for n, what in ((self.running, "running"), (self.waiting, "queued")) if n]
        return text + (", " + ", ".join(extra) if extra else "")

    @classmethod
    def of(cls, summary: ParetoSummary) -> Counts:
        cats = [r.category for r in summary.rows]
        return cls(
            running=cats.count("running"),
            feasible=cats.count("front") + cats.count("dominated"),
            infeasible=cats.count("infeasible"),
            failed=cats.count("failed"),
            skipped=cats.count("skipped"),
            waiting=cats.count("waiting"),
            superseded=cats.count("superseded"),
        )


def format_fidelity(m: Measurement | None) -> str | None:
    """``34.5 dB · 0.99931``: PSNR of the output and cosine of the final latents against the reference (``∞``:
    identical); None where the trial has none (``show`` and the TUI's trial screen both print this)."""
    if m is None or m.psnr_db is None:
        return None
    psnr = "∞" if math.isinf(m.psnr_db) else f"{m.psnr_db:.1f} dB"
    return psnr + (f" · {m.latent_cosine:.5f}" if m.latent_cosine is not None else "")


def _config_of(trial: TrialLike) -> TrialConfig | None:
    data = trial.user_attrs.get(CONFIG_ATTR)
    try:
        if isinstance(data, dict):
            return TrialConfig.from_dict(data)
        if trial.params:
            return TrialConfig.from_params(dict(trial.params))
    except (ValueError, TypeError):
        return None
    return None


def _measurement_of(trial: TrialLike) -> Measurement | None:
    data = trial.user_attrs.get(MEASUREMENT_ATTR)
    if not isinstance(data, dict) or "status" not in data:
        return None
    try:
        return Measurement.from_dict(data)
    except (TypeError, ValueError):
        return None


def _base_category(trial: TrialLike) -> Category:
    state = getattr(trial.state, "name", str(trial.state))
    if state == "COMPLETE":
        constraints = trial.constraints or {}
        values = constraints.values() if isinstance(constraints, Mapping) else constraints
        return "infeasible" if any(v > 0 for v in values) else "front"
    if state == "FAIL" and trial.user_attrs.get(STATUS_ATTR) == DEFERRED_STATUS:
        return "skipped"  # put aside before it ran (``loop.ledger.defer``)
    return {"FAIL": "failed", "PRUNED": "skipped", "RUNNING": "running", "WAITING": "waiting"}.get(state, "failed")  # type: ignore[return-value]


def row_from_trial(trial: TrialLike) -> TrialRow:
    """A ``TrialRow`` from a finished or running Optuna trial; missing attributes become ``None``."""
    measurement = _measurement_of(trial)
    values = trial.values or []
    latency = values[0] if len(values) > 0 else (measurement.latency_s if measurement else None)
    memory = trial.user_attrs.get(MEMORY_ATTR)
    reason = trial.user_attrs.get(REASON_ATTR) or (measurement.reason if measurement else None)
    predicted = trial.user_attrs.get(PREDICTED_ATTR)
    raw = trial.user_attrs.get(PREDICTED_RAW_ATTR)
    remeasure_of = trial.user_attrs.get(REMEASURE_OF_ATTR)
    return TrialRow(
        number=trial.number,
        category=_base_category(trial),
        config=_config_of(trial),
        measurement=measurement,
        latency_s=float(latency) if latency is not None else None,
        memory_bytes=int(memory) if isinstance(memory, (int, float)) else None,
        baseline=trial.user_attrs.get(BASELINE_ATTR),
        reason=reason,
        predicted_bytes=int(predicted) if isinstance(predicted, (int, float)) else None,
        predicted_raw_bytes=int(raw) if isinstance(raw, (int, float)) else None,
        remeasure_of=remeasure_of if isinstance(remeasure_of, int) else None,
    )


def _dominates(a: TrialRow, b: TrialRow) -> bool:
    assert a.latency_s is not None and b.latency_s is not None
    am, bm = a.memory_bytes or 0, b.memory_bytes or 0
    return a.latency_s <= b.latency_s and am <= bm and (a.latency_s < b.latency_s or am < bm)


def _front_numbers(rows: list[TrialRow]) -> set[int]:
    """Numbers of the rows no other row dominates (``_dominates``), in O(n log n) by a sweep over latency.

    A row is dominated when a strictly faster row uses no more memory, or an equally fast one uses less.
    """
    front: set[int] = set()
    ordered = sorted(rows, key=lambda r: (r.latency_s or 0.0, r.memory_bytes or 0))
    best_before = math.inf  # least memory among rows strictly faster than the current group
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j].latency_s == ordered[i].latency_s:
            j += 1
        group_least = ordered[i].memory_bytes or 0  # the group is sorted by memory
        for row in ordered[i:j]:
            mem = row.memory_bytes or 0
            if best_before > mem and not group_least < mem:
                front.add(row.number)
        best_before = min(best_before, group_least)
        i = j
    return front


def summarize(trials: Iterable[TrialLike], budget_bytes: int | None = None) -> ParetoSummary:
    """Sort trials into front, dominated, infeasible, failed, skipped and running; find the best."""
    rows = [row_from_trial(t) for t in trials]
    superseded = {r.remeasure_of for r in rows if r.remeasure_of is not None and r.category in _FINISHED}
    rows = [_with_category(r, "superseded") if r.number in superseded else r for r in rows]
    feasible = [r for r in rows if r.category == "front" and r.latency_s is not None]
    front_numbers = _front_numbers(feasible)
    final = tuple(
        _with_category(r, "front" if r.number in front_numbers else "dominated") if r.category == "front" else r
        for r in rows
    )
    front = tuple(sorted((r for r in final if r.category == "front"), key=lambda r: r.latency_s or 0.0))
    best = front[0] if front else None
    baselines = {r.baseline: r for r in final if r.baseline and r.category != "superseded"}
    speedups = {
        name: row.latency_s / best.latency_s
        for name, row in baselines.items()
        if best is not None and row.feasible and row.latency_s and best.latency_s
    }
    return ParetoSummary(
        rows=final, budget_bytes=budget_bytes, front=front, best=best, baselines=baselines, speedups=speedups
    )


_FINISHED = ("front", "infeasible", "failed")
"""Base categories of a finished trial (before the front is sorted out)."""


def _with_category(row: TrialRow, category: Category) -> TrialRow:
    from dataclasses import replace

    return replace(row, category=category)


def row_to_dict(row: TrialRow) -> dict[str, Any]:
    """Plain JSON-able form of a row (for ``show --json`` and recorded results)."""
    return {
        "number": row.number,
        "category": row.category,
        "configuration": row.config.describe() if row.config else None,
        "config": row.config.to_dict() if row.config else None,
        "baseline": row.baseline,
        "latency_s": row.latency_s,
        "memory_bytes": row.memory_bytes,
        "predicted_bytes": row.predicted_bytes,
        "predicted_raw_bytes": row.predicted_raw_bytes,
        "predicted_error": row.predicted_bytes / row.memory_bytes - 1
        if row.predicted_bytes is not None and row.memory_bytes
        else None,
        "reason": row.reason,
        "remeasure_of": row.remeasure_of,
        "measurement": row.measurement.to_dict() if row.measurement else None,
    }


def summary_to_dict(summary: ParetoSummary) -> dict[str, Any]:
    """Plain JSON-able form of a summary: front, best, baselines with speed-ups, and every row."""
    return {
        "budget_bytes": summary.budget_bytes,
        "best": summary.best.number if summary.best else None,
        "front": [r.number for r in summary.front],
        "speedups_over_baselines": dict(summary.speedups),
        "speedup": _speedup_dict(summary.speedup),
        "counts": {**dataclasses.asdict(summary.counts), "ran": summary.counts.ran},
        "baselines": {name: row.number for name, row in summary.baselines.items()},
        "trials": [row_to_dict(r) for r in summary.rows],
    }


def _speedup_dict(speedup: Speedup | None) -> dict[str, Any] | None:
    if speedup is None:
        return None
    return {**dataclasses.asdict(speedup), "definition": SPEEDUP_DEFINITION}
