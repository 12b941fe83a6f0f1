"""The Pareto summary: feasibility from constraints, domination, best trial and speed-ups."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import BASELINE_ATTR, CONFIG_ATTR, MEASUREMENT_ATTR, MEMORY_ATTR, REASON_ATTR
from qco_tune.core.records import Measurement
from qco_tune.search.pareto import summarize

GIB = 2**30


class State(Enum):
    COMPLETE = 1
    FAIL = 2
    PRUNED = 3
    RUNNING = 4


@dataclass
class PlainTrial:
    """A stand-in for optuna's FrozenTrial with the attributes the summary reads."""

    number: int
    state: State
    values: list[float] | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    constraints: list[float] = field(default_factory=list)


def done(
    number: int, latency: float, mem_gib: float, budget_gib: float = 16, baseline: str | None = None
) -> PlainTrial:
    attrs: dict[str, Any] = {
        CONFIG_ATTR: TrialConfig(compile="regional" if number % 2 else "none").to_dict(),
        MEASUREMENT_ATTR: Measurement(status="ok", device="cuda", latency_s=latency).to_dict(),
        MEMORY_ATTR: int(mem_gib * GIB),
    }
    if baseline:
        attrs[BASELINE_ATTR] = baseline
    return PlainTrial(number, State.COMPLETE, [latency, mem_gib], attrs, constraints=[mem_gib - budget_gib])


def test_front_is_feasible_and_non_dominated() -> None:
    trials = [
        done(0, 2.0, 10, baseline="reference"),
        done(1, 1.0, 12),  # front: fastest
        done(2, 3.0, 4),  # front: smallest
        done(3, 2.5, 11),  # dominated by 0
        done(4, 0.5, 20),  # over budget
        PlainTrial(5, State.FAIL, user_attrs={REASON_ATTR: "out of memory"}),
        PlainTrial(6, State.PRUNED, user_attrs={REASON_ATTR: "invalid: record_stream needs use_stream"}),
        PlainTrial(7, State.RUNNING),
    ]
    summary = summarize(trials, 16 * GIB)
    assert [r.number for r in summary.front] == [1, 0, 2]
    assert [r.number for r in summary.by_category("dominated")] == [3]
    assert [r.number for r in summary.by_category("infeasible")] == [4]
    assert summary.by_category("failed")[0].reason == "out of memory"
    assert summary.by_category("skipped")[0].reason.startswith("invalid")
    assert [r.number for r in summary.by_category("running")] == [7]
    assert summary.best is not None and summary.best.number == 1
    assert summary.speedups == {"reference": 2.0}
    assert summary.row(3) is not None and summary.row(3).feasible


def test_equal_points_do_not_dominate_each_other() -> None:
    summary = summarize([done(0, 1.0, 5), done(1, 1.0, 5)], 16 * GIB)
    assert {r.number for r in summary.front} == {0, 1}


def test_trial_with_missing_attributes_from_an_older_version() -> None:
    old = PlainTrial(0, State.COMPLETE, [1.0, 2.0], user_attrs={}, params={"compile": "none", "offload": "none"})
    row = summarize([old]).rows[0]
    assert row.config == TrialConfig()
    assert row.measurement is None and row.memory_bytes is None and row.latency_s == 1.0


def test_no_feasible_trial_means_no_best() -> None:
    summary = summarize([done(0, 1.0, 30)], 16 * GIB)
    assert summary.best is None and summary.front == () and summary.speedups == {}
