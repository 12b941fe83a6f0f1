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


def test_one_speedup_over_the_fastest_recipe_within_budget_and_one_count() -> None:
    from qco_tune.core.keys import REMEASURE_OF_ATTR
    from qco_tune.search.pareto import Counts

    remeasured = done(7, 1.1, 12)
    remeasured.user_attrs[REMEASURE_OF_ATTR] = 1
    trials = [
        done(0, 4.0, 10, baseline="reference"),
        done(1, 1.0, 12),  # extrapolated, superseded by #7
        done(2, 3.0, 8, baseline="quantization"),
        done(3, 0.5, 20, baseline="quantization + compile"),  # faster, but over the budget
        done(4, 2.0, 9, baseline="quantization + group offload"),
        PlainTrial(5, State.FAIL, user_attrs={REASON_ATTR: "out of memory"}),
        PlainTrial(6, State.PRUNED, user_attrs={REASON_ATTR: "repeats #2"}),
        remeasured,
    ]
    summary = summarize(trials, 16 * GIB)
    speedup = summary.speedup
    assert summary.best is not None and summary.best.number == 7
    # Over the fastest recipe that fits (#4, 2.0 s), not the reference nor the one over budget.
    assert speedup is not None and (speedup.recipe, speedup.recipe_number, speedup.best_number) == (
        "quantization + group offload",
        4,
        7,
    )
    assert speedup.ratio == 2.0 / 1.1 and speedup.describe() == "1.82× · quantization + group offload #4"
    assert summary.counts == Counts(feasible=4, infeasible=1, failed=1, skipped=1, superseded=1)
    assert summary.counts.ran == 7 and summary.counts.total == 8
    assert summary.counts.describe() == "7 ran (4 within budget, 1 over, 1 failed), 1 skipped before running"


def test_when_the_best_is_a_recipe_the_speedup_says_so() -> None:
    summary = summarize([done(0, 1.0, 10, baseline="reference"), done(1, 2.0, 8)], 16 * GIB)
    assert summary.speedup is not None and summary.speedup.describe() == "1.00× · the best is 'reference' #0 itself"
