"""What is read of a stored study, as plain values: its overview, its trials and their times, its summary.

Headless and stdlib only; ``store.tables`` fills these from a storage, the TUI shows them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from qco_tune.core.keys import (
    BASELINE_ATTR,
    CAPABILITIES_ATTR,
    CONFIG_ATTR,
    GPU_ATTR,
    MEASUREMENT_ATTR,
    MEMORY_ATTR,
    MODEL_ATTR,
    PREDICTED_ATTR,
    REASON_ATTR,
    SPEC_ATTR,
    STATUS_ATTR,
)
from qco_tune.search.budget import study_counted_memory
from qco_tune.search.pareto import Counts, ParetoSummary, Speedup, TrialRow, summarize

if TYPE_CHECKING:
    pass


FINISHED_STATES = ("COMPLETE", "FAIL", "PRUNED")


TRIAL_ATTRS = (CONFIG_ATTR, MEASUREMENT_ATTR, MEMORY_ATTR, BASELINE_ATTR, REASON_ATTR, STATUS_ATTR, PREDICTED_ATTR)
"""The trial attributes the TUI reads (others, e.g. the owner's host and pid, are not needed)."""


LIGHT_ATTRS = (BASELINE_ATTR, MEMORY_ATTR, PREDICTED_ATTR)
"""What a partial load reads: enough for the overview and the plot."""


class DataError(RuntimeError):
    """The storage cannot be read now; the message is one line for the interface."""


# -- value objects ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stamp:
    """What changes when a trial is added or finishes: compared to decide whether to reload."""

    n_trials: int = 0
    n_finished: int = 0
    last: str = ""


@dataclass(frozen=True)
class StudyOverview:
    """One row of the studies screen."""

    name: str
    model: str
    gpu: str
    budget_bytes: int | None
    memory_metric: str
    counts: Counts
    best_latency_s: float | None
    best_number: int | None
    speedup: Speedup | None
    """The study's speed-up (``pareto.SPEEDUP_DEFINITION``)."""
    stamp: Stamp
    note: str | None = None
    """Why something is missing (e.g. a study not made by qco-tune)."""
    counted_memory: str = "VRAM (device)"
    """What the budget and the peaks count, in words (``budget.counted_memory``): host RAM on a CPU study."""


@dataclass(frozen=True)
class TrialTimes:
    start: datetime.datetime | None = None
    complete: datetime.datetime | None = None

    @property
    def duration_s(self) -> float | None:
        if self.start is None or self.complete is None:
            return None
        return (self.complete - self.start).total_seconds()


@dataclass(frozen=True)
class StudyData:
    """Everything the study screen, the trial screen and the exporter need about one study."""

    overview: StudyOverview
    summary: ParetoSummary
    spec: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    times: Mapping[int, TrialTimes] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)
    """Every user attribute of the study (what the exporter reads)."""
    trials: Sequence[Any] = ()
    """The stored trials (``StoredTrial`` or Optuna's ``FrozenTrial``), duck-typed as ``pareto.TrialLike``."""
    partial: bool = False
    """Read without configurations and measurements (the first, fast step of opening a big study)."""
    _index: dict[int, TrialRow] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({r.number: r for r in self.summary.rows})

    @property
    def name(self) -> str:
        return self.overview.name

    def row(self, number: int) -> TrialRow | None:
        return self._index.get(number)


# -- building ---------------------------------------------------------------------------------------
@dataclass
class StoredTrial:
    """The parts of a stored trial that ``pareto.summarize`` reads (a duck-typed ``FrozenTrial``)."""

    number: int
    state: str
    values: list[float] | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    datetime_start: datetime.datetime | None = None
    datetime_complete: datetime.datetime | None = None


def _text(value: Any, default: str = "?") -> str:
    return str(value) if isinstance(value, (str, int, float)) and value != "" else default


def overview_of(name: str, attrs: Mapping[str, Any], summary: ParetoSummary, stamp: Stamp) -> StudyOverview:
    """The studies-screen row of a study from its user attributes and summary."""
    spec = attrs.get(SPEC_ATTR)
    spec = spec if isinstance(spec, dict) else {}
    budget = spec.get("vram_budget")
    return StudyOverview(
        name=name,
        model=_text(spec.get("model")),
        gpu=_text(attrs.get(GPU_ATTR)),
        budget_bytes=int(budget) if isinstance(budget, (int, float)) else None,
        memory_metric=_text(spec.get("memory_metric"), "device"),
        counts=Counts.of(summary),
        best_latency_s=summary.best.latency_s if summary.best else None,
        best_number=summary.best.number if summary.best else None,
        speedup=summary.speedup,
        stamp=stamp,
        note=None if spec else "no qco.spec attribute: not a qco-tune study, or made by an older version",
        counted_memory=study_counted_memory(spec, attrs.get(CAPABILITIES_ATTR)),
    )


def build_study(
    name: str, attrs: Mapping[str, Any], trials: Sequence[Any], stamp: Stamp, *, partial: bool = False
) -> StudyData:
    """A study's data from its user attributes and trials (``StoredTrial`` or ``FrozenTrial``)."""
    spec = attrs.get(SPEC_ATTR)
    spec = spec if isinstance(spec, dict) else {}
    budget = spec.get("vram_budget")
    summary = summarize(trials, int(budget) if isinstance(budget, (int, float)) else None)
    return StudyData(
        overview=overview_of(name, attrs, summary, stamp),
        summary=summary,
        spec=spec,
        model=as_dict(attrs.get(MODEL_ATTR)),
        capabilities=as_dict(attrs.get(CAPABILITIES_ATTR)),
        times={t.number: TrialTimes(t.datetime_start, t.datetime_complete) for t in trials},
        attrs=dict(attrs),
        trials=trials,
        partial=partial,
    )


def as_dict(value: Any) -> dict[str, Any]:
    """A stored attribute that should be a JSON object: itself, or empty when it is anything else."""
    return value if isinstance(value, dict) else {}


# -- readers ----------------------------------------------------------------------------------------
class StorageReader(Protocol):
    """Reads studies from one storage. Methods block: call them from a worker thread."""

    url: str

    def list_studies(self) -> list[StudyOverview]: ...
    def stamps(self) -> dict[str, Stamp]: ...
    def load_study(self, name: str, *, partial: bool = False) -> StudyData: ...
