"""What a trial is expected to cost in GPU seconds, learned from the study's measured trials.

Stdlib only. A trial's cost is child start to result (``Measurement.extra["wall_s"]``): load, the first call
(compilation, when compiling) and the timed calls. Compiling dominates: a full-size FLUX.1-dev trial on an
H200 cost about 55 s eager and 90 to 290 s compiled (``studies/results/flux-dev-24gib/``). The planner ranks
compile variants by gain per expected second; the study loop leaves a queued trial for the next run when it
is not expected to finish before the run's time limit (a trial cut off at the limit is GPU time lost).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, Protocol

from qco_tune.core.config import TrialConfig

PRIOR_COST = {
    ("regional", "default"): 3.0,
    ("full", "default"): 4.0,
    ("regional", "reduce-overhead"): 4.0,
    ("full", "reduce-overhead"): 5.0,
}
"""Cost of a compile variant in eager trials, before one like it has been measured (autotuning: 8)."""
PRIOR_AUTOTUNE_COST = 8.0


class Spent(Protocol):
    """A finished trial's configuration and what it cost (``planner.Done``)."""

    @property
    def config(self) -> TrialConfig: ...
    @property
    def seconds(self) -> float | None: ...


def compile_costs(done: Sequence[Spent]) -> dict[Any, float]:
    """Mean measured seconds per compile variant (scope, mode), and of eager trials (key None)."""
    spent: dict[Any, list[float]] = {}
    for d in done:
        if d.seconds is not None and d.seconds > 0:
            key = None if d.config.compile == "none" else (d.config.compile, d.config.compile_mode)
            spent.setdefault(key, []).append(d.seconds)
    return {k: sum(v) / len(v) for k, v in spent.items()}


def compile_cost(config: TrialConfig, costs: dict[Any, float]) -> float:
    """Seconds a compile variant is expected to cost: as measured for its kind, else a multiple of an eager trial."""
    kind = (config.compile, config.compile_mode)
    if kind in costs:
        return costs[kind]
    eager = costs.get(None, 1.0)
    return eager * PRIOR_COST.get(kind, PRIOR_AUTOTUNE_COST)


def _kind(config: TrialConfig) -> tuple[str, str, str]:
    c = config.canonical()
    return (c.compile, c.compile_mode, c.offload)


def expected_seconds(config: TrialConfig, done: Sequence[Spent]) -> float | None:
    """Seconds a trial of ``config`` is expected to take: the median of the measured trials alike in compile
    variant and offloading (offloading trials run slower calls), else ``compile_cost``; None before any
    trial has been measured."""
    alike = [d.seconds for d in done if d.seconds and d.seconds > 0 and _kind(d.config) == _kind(config)]
    if alike:
        return float(statistics.median(alike))
    costs = compile_costs(done)
    if not costs:
        return None
    if config.compile == "none":
        return costs.get(None)
    return compile_cost(config, costs)
