"""What a trial is expected to cost in GPU seconds, learned from the study's measured trials.

Stdlib only. A trial's cost is child start to result (``Measurement.extra["wall_s"]``): load, the first call
(compilation, when compiling) and the timed calls. Compiling dominates, and depends on the quantization: a
full-size FLUX.1-dev trial on an H200 cost about 55 s eager, 90 to 290 s compiled with NF4, 252 s with a
float8 transformer compiled regionally, and over 387 s compiled whole (``studies/results/flux-dev-24gib/``).
The planner ranks compile variants by gain per expected second; the study loop leaves a queued trial for the
next run when it is not expected to finish before the run's time limit (a trial cut off at the limit is GPU
time lost).
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
FLOOR_GROWTH = 1.25
"""A configuration cut off after T seconds had not finished: it is expected to need at least this times T."""


class Spent(Protocol):
    """A finished trial's configuration and what it cost (``planner.Done``)."""

    @property
    def config(self) -> TrialConfig: ...
    @property
    def seconds(self) -> float | None: ...


def _prior(kind: tuple[str, str]) -> float:
    return PRIOR_COST.get(kind, PRIOR_AUTOTUNE_COST)


def compile_costs(done: Sequence[Spent]) -> dict[Any, float]:
    """Mean measured seconds by compile variant (scope, mode), by quantization and compile variant
    ((quantization, scope, mode)), and of eager trials (key None)."""
    spent: dict[Any, list[float]] = {}
    for d in done:
        if d.seconds is not None and d.seconds > 0:
            c = d.config
            if c.compile == "none":
                spent.setdefault(None, []).append(d.seconds)
            else:
                spent.setdefault((c.compile, c.compile_mode), []).append(d.seconds)
                spent.setdefault((c.quantization, c.compile, c.compile_mode), []).append(d.seconds)
    return {k: sum(v) / len(v) for k, v in spent.items()}


def compile_cost(config: TrialConfig, costs: dict[Any, float]) -> float:
    """Seconds a compile variant is expected to cost: as measured for its quantization and kind; else another
    kind measured with its quantization, scaled by the priors (a float8 transformer compiles far longer than
    an NF4 one, whatever the variant); else as measured for its kind; else a multiple of an eager trial."""
    kind = (config.compile, config.compile_mode)
    if (config.quantization, *kind) in costs:
        return costs[(config.quantization, *kind)]
    same_quant = [
        seconds * _prior(kind) / _prior((k[1], k[2]))
        for k, seconds in costs.items()
        if isinstance(k, tuple) and len(k) == 3 and k[0] == config.quantization
    ]
    if same_quant:
        return max(same_quant)
    if kind in costs:
        return costs[kind]
    return costs.get(None, 1.0) * _prior(kind)


def _kind(config: TrialConfig) -> tuple[Any, ...]:
    """Compile variant and placement: the pipeline-wide offload and each component's own (a T5 released
    after encoding moves it off the GPU on every call, so it is not the cost class of all resident)."""
    c = config.canonical()
    return (c.compile, c.compile_mode, c.offload, c.placement)


def expected_seconds(config: TrialConfig, done: Sequence[Spent], floor: float | None = None) -> float | None:
    """Seconds a trial of ``config`` is expected to take: the median of the measured trials alike in
    quantization, compile variant and placement (offloading trials run slower calls), else ``compile_cost``
    (for an eager trial: the eager trials alike in placement, else all eager ones); None before any trial
    has been measured. ``floor``: the longest run of ``config`` cut off before it finished."""
    expected = _expected(config, done)
    if floor is None:
        return expected
    return max(expected or 0.0, floor * FLOOR_GROWTH)


def _expected(config: TrialConfig, done: Sequence[Spent]) -> float | None:
    measured = [(d.config, float(d.seconds)) for d in done if d.seconds and d.seconds > 0]
    alike = [s for c, s in measured if _kind(c) == _kind(config)]
    twins = [s for c, s in measured if _kind(c) == _kind(config) and c.quantization == config.quantization]
    if twins:
        return float(statistics.median(twins))
    costs = compile_costs(done)
    if config.compile == "none":
        return float(statistics.median(alike)) if alike else costs.get(None)
    compiled_here = any(c.compile != "none" and c.quantization == config.quantization for c, _ in measured)
    if alike and not compiled_here:
        return float(statistics.median(alike))
    return compile_cost(config, costs) if costs else None
