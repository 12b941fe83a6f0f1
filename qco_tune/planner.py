"""What qco-tune measures next when nothing is queued: cheap configurations first, then compile the front.

Stdlib only. A trial's GPU cost is dominated by its cold start, and torch.compile is what makes a cold
start long (tens of seconds to minutes), while compiling changes a configuration's latency and hardly
its memory. So the search runs in two phases, decided afresh from the measured trials before each
proposal (nothing is kept in memory: a resumed study or a second worker plans the same way):

1. **Survey without compiling.** The sampler proposes with ``compile = none`` fixed, so it maps the
   memory levels (quantization x offloading) and their eager latencies cheaply. The survey ends when
   no untried uncompiled configuration is left, or when at least ``MIN_SURVEY`` have been measured
   and the last ``SURVEY_PATIENCE`` did not enlarge the uncompiled front (hypervolume), or when half
   of a trial target is spent.
2. **Compile the front.** For every measured configuration whose compiled variant could still reach
   the front (its latency divided by the largest compile speed-up seen, per quantization backend, with
   a margin, is not dominated), its cheapest untried compile variant (regional before full, default
   mode before autotuning, no fullgraph first) is a candidate; the one that would add the most
   hypervolume goes next. A compiled configuration on the front has its next compile variant tried
   the same way.

When neither phase has a candidate the sampler proposes freely (TPE over the whole space). Everything
a plan proposes is checked by the caller's ``runnable`` (rules, duplicates, the memory model), so a
plan never costs a skipped proposal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qco_tune.config import COMPILE_MODES, TrialConfig
from qco_tune.frontier import Point, hypervolume_2d, pareto_points

MIN_SURVEY = 6
"""Uncompiled configurations measured at least before compiling (where the space has that many)."""
SURVEY_PATIENCE = 4
"""The survey ends after this many uncompiled measurements in a row that leave its front unchanged."""
SKIPS_BEFORE_CONCRETE = 3
"""After this many skipped proposals in a row the survey names an untried configuration itself."""
PRIOR_COMPILE_SPEEDUP = 3.0
"""Latency(eager) / latency(compiled) assumed possible before any pair has been measured."""
SPEEDUP_MARGIN = 1.25
"""Optimism on the largest measured speed-up (another compile variant may do better)."""
REFINE_SPEEDUP = 1.3
"""A compiled front configuration's next compile variant is assumed possibly this much faster."""
NEAR_BUDGET = 1.1
"""An eager configuration this close over the budget may fit compiled (fused kernels keep fewer activations)."""
PRIOR_COST = {
    ("regional", "default"): 3.0,
    ("full", "default"): 4.0,
    ("regional", "reduce-overhead"): 4.0,
    ("full", "reduce-overhead"): 5.0,
}
"""Cost of a compile variant in eager trials, before one like it has been measured (autotuning: 8)."""
PRIOR_AUTOTUNE_COST = 8.0
IMPROVEMENT = 1e-3
"""Relative hypervolume gain that counts as enlarging the front."""
SCOPE_COST = {"regional": 0, "full": 1}
MODE_COST = {mode: i for i, mode in enumerate(COMPILE_MODES)}


@dataclass(frozen=True)
class Done:
    """One finished trial as the planner sees it."""

    number: int
    config: TrialConfig
    latency_s: float | None
    """None when the trial failed."""
    memory_bytes: float | None
    feasible: bool
    seconds: float | None = None
    """What the trial cost, child start to result (``Measurement.extra["wall_s"]``)."""


Plan = dict[str, Any]
"""Parameters to enqueue: a full configuration (``SearchSpace.params``) or ``{"compile": "none"}``."""


def plan_next(
    knobs: dict[str, tuple[Any, ...]],
    configs: Sequence[TrialConfig],
    done: Sequence[Done],
    tried: set[str],
    runnable: Callable[[TrialConfig], bool],
    *,
    budget_bytes: float,
    target: int | None = None,
    skips_in_a_row: int = 0,
) -> TrialConfig | Plan | None:
    """The next thing to measure: a configuration, partial parameters for the sampler, or None (sampler's choice).

    ``knobs`` and ``configs`` are the space's (``SearchSpace.knobs``, ``SearchSpace.enumerate``);
    ``tried`` holds the keys of every configuration measured, failed or running.
    """
    scopes = knobs.get("compile", ())
    if "none" not in scopes or len(scopes) < 2:
        return None  # nothing to stage: every configuration compiles alike
    if _surveying(configs, done, tried, runnable, target):
        if skips_in_a_row >= SKIPS_BEFORE_CONCRETE:
            return _untried_uncompiled(configs, done, tried, runnable)
        return {"compile": "none"}
    return _compile_candidate(configs, done, tried, runnable, budget_bytes)


def _surveying(
    configs: Sequence[TrialConfig],
    done: Sequence[Done],
    tried: set[str],
    runnable: Callable[[TrialConfig], bool],
    target: int | None,
) -> bool:
    eager = [d for d in sorted(done, key=lambda d: d.number) if d.config.compile == "none"]
    if target is not None and len(eager) >= max(1, target // 2):
        return False
    if not any(c.compile == "none" and c.key() not in tried and runnable(c) for c in configs):
        return False
    measured = [d for d in eager if d.latency_s is not None]
    if len(measured) < MIN_SURVEY:
        return True
    stale = 0
    reference = _reference(measured)
    front_hv = 0.0
    for d in measured:
        points = _feasible_points([x for x in measured if x.number <= d.number])
        hv = hypervolume_2d(points, reference)
        if hv > front_hv * (1 + IMPROVEMENT) and hv > 0:
            stale = 0
        else:
            stale += 1
        front_hv = max(front_hv, hv)
    return stale < SURVEY_PATIENCE


def _untried_uncompiled(
    configs: Sequence[TrialConfig], done: Sequence[Done], tried: set[str], runnable: Callable[[TrialConfig], bool]
) -> TrialConfig | None:
    """An untried uncompiled configuration, preferring a memory level (quantization, offload) not seen yet."""
    seen = {_memory_level(d.config) for d in done}
    untried = [c for c in configs if c.compile == "none" and c.key() not in tried and runnable(c)]
    fresh = [c for c in untried if _memory_level(c) not in seen]
    pick = fresh or untried
    return pick[0] if pick else None


def _memory_level(config: TrialConfig) -> tuple[Any, ...]:
    return (config.quantization, config.offload, config.blocks_per_group, config.use_stream)


def _compile_candidate(
    configs: Sequence[TrialConfig],
    done: Sequence[Done],
    tried: set[str],
    runnable: Callable[[TrialConfig], bool],
    budget_bytes: float,
) -> TrialConfig | None:
    measured = [d for d in done if d.latency_s is not None and d.memory_bytes is not None]
    feasible = [d for d in measured if d.feasible]
    if not feasible:
        return None
    near = [
        d
        for d in measured
        if not d.feasible and d.config.compile == "none" and (d.memory_bytes or 0) <= budget_bytes * NEAR_BUDGET
    ]
    by_runtime: dict[str, list[TrialConfig]] = {}
    for config in configs:
        if config.compile != "none" and config.key() not in tried and runnable(config):
            by_runtime.setdefault(_eager_key(config), []).append(config)
    if not by_runtime:
        return None
    speedups = _speedups(measured)
    points = _feasible_points(feasible)
    reference = (max(p[0] for p in points) * 1.1, max(budget_bytes, *(p[1] for p in points)) * 1.1)
    current = hypervolume_2d(points, reference)
    front = set(pareto_points(points))
    costs = _costs(done)
    best: tuple[float, int, TrialConfig] | None = None
    for d in [*feasible, *near]:
        assert d.latency_s is not None and d.memory_bytes is not None
        variants = by_runtime.get(_eager_key(d.config))
        if not variants:
            continue
        if d.config.compile == "none":
            seen = speedups.get(_quant(d.config))
            factor = (seen if seen else max(speedups.get(None, 0.0), PRIOR_COMPILE_SPEEDUP)) * SPEEDUP_MARGIN
        elif (d.latency_s, d.memory_bytes) in front:
            factor = REFINE_SPEEDUP
        else:
            continue
        hoped = (d.latency_s / factor, min(d.memory_bytes, budget_bytes))
        gain = hypervolume_2d([*points, hoped], reference) - current
        if gain <= current * IMPROVEMENT and current > 0:
            continue
        cheapest = min(variants, key=_compile_cost)
        value = gain / _expected_cost(cheapest, costs)
        if best is None or (value, -d.number) > (best[0], best[1]):
            best = (value, -d.number, cheapest)
    return best[2] if best is not None else None


def _costs(done: Sequence[Done]) -> dict[Any, float]:
    """Mean measured seconds per compile variant (scope, mode), and of eager trials (key None)."""
    spent: dict[Any, list[float]] = {}
    for d in done:
        if d.seconds is not None and d.seconds > 0:
            key = None if d.config.compile == "none" else (d.config.compile, d.config.compile_mode)
            spent.setdefault(key, []).append(d.seconds)
    return {k: sum(v) / len(v) for k, v in spent.items()}


def _expected_cost(config: TrialConfig, costs: dict[Any, float]) -> float:
    """Seconds a compile variant is expected to cost: as measured for its kind, else a multiple of an eager trial."""
    kind = (config.compile, config.compile_mode)
    if kind in costs:
        return costs[kind]
    eager = costs.get(None, 1.0)
    return eager * PRIOR_COST.get(kind, PRIOR_AUTOTUNE_COST)


def _eager_key(config: TrialConfig) -> str:
    """The configuration without its compile knobs."""
    return dataclasses.replace(config, compile="none", compile_mode="default", fullgraph=False).key()


def _compile_cost(config: TrialConfig) -> tuple[int, int, bool]:
    return (SCOPE_COST.get(config.compile, 2), MODE_COST.get(config.compile_mode, 9), config.fullgraph)


def _quant(config: TrialConfig) -> Any:
    return config.quantization


def _speedups(measured: Sequence[Done]) -> dict[Any, float]:
    """Largest eager/compiled latency ratio measured, per quantization and overall (key None)."""
    eager = {d.config.key(): d.latency_s for d in measured if d.config.compile == "none"}
    out: dict[Any, float] = {}
    for d in measured:
        if d.config.compile == "none" or not d.latency_s:
            continue
        base = eager.get(_eager_key(d.config))
        if not base:
            continue
        ratio = base / d.latency_s
        for key in (_quant(d.config), None):
            out[key] = max(out.get(key, 0.0), ratio)
    return out


def _feasible_points(done: Sequence[Done]) -> list[Point]:
    return [
        (float(d.latency_s), float(d.memory_bytes))
        for d in done
        if d.feasible and d.latency_s is not None and d.memory_bytes is not None
    ]


def _reference(measured: Sequence[Done]) -> Point:
    points = [(float(d.latency_s or 0), float(d.memory_bytes or 0)) for d in measured]
    return (max((p[0] for p in points), default=1.0) * 1.1 + 1e-9, max((p[1] for p in points), default=1.0) * 1.1 + 1)
