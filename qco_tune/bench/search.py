"""``qco-tune bench search``: how much GPU time a sampler spends to find the Pareto front, replayed from a grid.

A grid (``qco_tune.bench.grid``) holds one real measurement of every configuration of a reduced space and
what each trial cost. A replay runs a real Optuna study over the grid's own ``SearchSpace`` (so its
proposals and conditional parameters are those of ``qco-tune run``); where a trial would run, the
recorded measurement answers and its recorded seconds are charged. Failed records become failed
trials; a configuration the grid lacks is outside the space (skipped, free), and so is one that
breaks a rule. Samplers:

- ``random``: Optuna's ``RandomSampler``;
- ``optuna_default``: Optuna's ``TPESampler`` with its default arguments (only the seed set), no seeded recipes;
- ``qco_tpe``: qco-tune's loop without the planner (the sampler of ``make_sampler``, the guide's
  recipes seeded, proposals that break a rule, repeat a trial or are predicted clearly over budget
  skipped for free);
- ``qco``: what ``qco-tune run`` does: the same with the planner (``qco_tune.search.planner``);
- ``exhaustive`` (on request): every configuration of the grid in the file's order, a reference.

The two plain-Optuna samplers get what any careful user would add: a proposal outside the space is
pruned and a repeated configuration is answered from the earlier trial, both free.

Score: the hypervolume of the feasible front (latency and peak memory both minimised; only
configurations that finished within the VRAM budget count) against the GPU seconds spent so far.
The reference point is fixed by the grid: 1.1 x the largest latency and 1.1 x the largest memory among
its feasible records, so every feasible record adds area and the score does not depend on the sampler.
``gpu_seconds_to_95`` is the median over seeds of the seconds spent until the front's hypervolume
reaches 95 % of the whole grid's (a seed that never does counts as never; the median is null when
more than half never do).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qco_tune.bench.grid import Grid, GridError
from qco_tune.core.config import TrialConfig
from qco_tune.core.errors import InputError
from qco_tune.core.records import Measurement, TrialRequest
from qco_tune.core.units import format_size
from qco_tune.loop.context import RunResult, SilentObserver, StudyContext
from qco_tune.loop.setup import open_study, quiet_optuna
from qco_tune.loop.study import run_loop
from qco_tune.search.frontier import Point, hypervolume_2d
from qco_tune.search.space import SearchSpace

SAMPLERS = ("random", "optuna_default", "qco_tpe", "qco", "exhaustive")


DEFAULT_SAMPLERS = SAMPLERS[:4]


TARGET = 0.95


REFERENCE_MARGIN = 1.1


MAX_PROPOSALS_PER_CONFIG = 20
"""A replay stops after this many proposals per valid configuration of the space."""


MAX_STALL = 300
"""A replay stops after this many proposals in a row that measure nothing new (a sampler stuck on repeats)."""


OUTSIDE = "not in the recorded grid (outside the benchmark's space)"


class GridSpace(SearchSpace):
    """The recorder's space, narrowed to the configurations the grid holds: the rest is outside."""

    def __init__(self, base: SearchSpace, keys: set[str]) -> None:
        super().__init__(
            model=base.model, caps=base.caps, allowed=dict(base.allowed), knobs=base.knobs(), missing=base.missing()
        )
        self._keys = keys

    def violations(self, config: TrialConfig) -> list[str]:
        found = super().violations(config)
        if not found and config.key() not in self._keys:
            found.append(OUTSIDE)
        return found

    def enumerate(self) -> list[TrialConfig]:
        return [c for c in super().enumerate() if c.key() in self._keys]


@dataclass
class Replay:
    """One sampler, one seed: the hypervolume after each trial charged, against seconds spent."""

    sampler: str
    seed: int
    seconds: list[float] = field(default_factory=lambda: [0.0])
    hypervolume: list[float] = field(default_factory=lambda: [0.0])
    trials: int = 0
    proposals: int = 0

    def seconds_to(self, level: float) -> float | None:
        """GPU seconds spent when the hypervolume first reached ``level``; None if it never did."""
        for spent, hv in zip(self.seconds, self.hypervolume, strict=True):
            if hv >= level * (1 - 1e-12):
                return spent
        return None

    def at(self, spent: float) -> float:
        """The hypervolume reached with ``spent`` GPU seconds (a step function)."""
        value = 0.0
        for s, hv in zip(self.seconds, self.hypervolume, strict=True):
            if s > spent:
                break
            value = hv
        return value


@dataclass
class Scorer:
    """Charges recorded seconds and tracks the feasible front of what was measured."""

    grid: Grid
    budget: int
    replay: Replay
    reference: Point
    full: float
    points: list[Point] = field(default_factory=list)
    measured: set[str] = field(default_factory=set)
    space_size: int = 0
    last_new: int = 0
    """``replay.proposals`` when the last new configuration was measured."""

    def charge(self, config: TrialConfig) -> Measurement:
        record = self.grid.records[config.key()]
        self.measured.add(record.key)
        self.last_new = self.replay.proposals
        self.replay.trials += 1
        spent = self.replay.seconds[-1] + record.trial_s
        if record.ok and record.memory_bytes is not None and record.memory_bytes <= self.budget:
            assert record.measurement.latency_s is not None
            self.points.append((record.measurement.latency_s, float(record.memory_bytes)))
        self.replay.seconds.append(spent)
        self.replay.hypervolume.append(hypervolume_2d(self.points, self.reference))
        return record.measurement

    def execute(self, request: TrialRequest, timeout: float = 0.0, on_phase: Any = None) -> Measurement:
        """The study's trial runner, replayed."""
        return self.charge(request.config)

    @property
    def finished(self) -> bool:
        complete = self.replay.hypervolume[-1] >= self.full * (1 - 1e-12)
        spent = len(self.measured) >= len(self.grid.records)
        stuck = self.replay.proposals - self.last_new > MAX_STALL
        return complete or spent or stuck or self.replay.proposals > MAX_PROPOSALS_PER_CONFIG * self.space_size + 100


def feasible_points(grid: Grid, budget: int) -> list[Point]:
    return [
        (float(r.measurement.latency_s or 0.0), float(r.memory_bytes or 0))
        for r in grid.records.values()
        if r.ok and r.memory_bytes is not None and r.memory_bytes <= budget
    ]


def reference_point(grid: Grid, budget: int) -> Point:
    """1.1 x the largest latency and the largest memory among the grid's feasible records."""
    points = feasible_points(grid, budget)
    if not points:
        smallest = min((r.memory_bytes for r in grid.records.values() if r.ok and r.memory_bytes), default=None)
        raise GridError(
            f"no configuration of the grid finished within a {format_size(budget)} budget"
            + (f" (the smallest recorded peak is {format_size(smallest)})" if smallest else " (none finished at all)")
        )
    return (max(p[0] for p in points) * REFERENCE_MARGIN, max(p[1] for p in points) * REFERENCE_MARGIN)


def grid_space(grid: Grid) -> GridSpace:
    base = SearchSpace.build(grid.spec, grid.model, grid.caps)
    space = GridSpace(base, set(grid.records))
    foreign = [r.config.describe() for r in grid.records.values() if base.violations(r.config)]
    if foreign:
        raise GridError(f"the grid holds {len(foreign)} configuration(s) outside its own space, e.g. {foreign[0]}")
    return space


def run_replay(grid: Grid, sampler: str, seed: int, budget: int) -> Replay:
    """Replay ``grid`` with one sampler and seed until the whole front is found (or the grid is spent)."""
    import optuna

    quiet_optuna()
    reference = reference_point(grid, budget)
    scorer = Scorer(
        grid, budget, Replay(sampler, seed), reference, hypervolume_2d(feasible_points(grid, budget), reference)
    )
    space = grid_space(grid)
    scorer.space_size = len(SearchSpace.enumerate(space))
    if sampler in ("qco", "qco_tpe"):
        _qco_replay(grid, space, scorer, seed, budget, plan=sampler == "qco")
    elif sampler == "random":
        _plain_replay(space, scorer, optuna.samplers.RandomSampler(seed=seed))
    elif sampler == "optuna_default":
        _plain_replay(space, scorer, optuna.samplers.TPESampler(seed=seed))
    elif sampler == "exhaustive":
        _plain_replay(space, scorer, optuna.samplers.RandomSampler(seed=seed), queue=list(grid.records.values()))
    else:
        raise InputError(f"unknown sampler {sampler!r}; samplers: {', '.join(SAMPLERS)}")
    return scorer.replay


def _qco_replay(grid: Grid, space: GridSpace, scorer: Scorer, seed: int, budget: int, *, plan: bool) -> None:
    """qco-tune's own loop (``study.run_loop``) on an in-memory study, with the grid as the trial runner."""
    import optuna

    spec = dataclasses.replace(grid.spec, name=f"bench-{seed}", vram_budget=budget, trials=None, timeout=None)
    study, _ = open_study(spec, optuna.storages.InMemoryStorage(), grid.model, grid.caps, space, seed=seed)
    ctx = StudyContext(
        spec, grid.model, grid.caps, space, study, _Counting(scorer), {}, execute=scorer.execute, plan=plan
    )
    run_loop(ctx, RunResult(spec.name), should_stop=lambda: scorer.finished)


class _Counting(SilentObserver):
    """Counts proposals (run and skipped) for the replay's safety cap."""

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer

    def trial_started(self, number: int, config: TrialConfig, baseline: str | None, index: int) -> None:
        self._scorer.replay.proposals += 1

    def trial_skipped(self, number: int, config: TrialConfig, reason: str) -> None:
        self._scorer.replay.proposals += 1


def _plain_replay(space: GridSpace, scorer: Scorer, sampler: Any, queue: Sequence[Any] = ()) -> None:
    """Plain Optuna ask and tell: two objectives, no constraints, no seeded recipes (``queue``: records
    to enqueue first, in order)."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for record in queue:
        study.enqueue_trial(space.params(record.config))
    answers: dict[str, list[float] | None] = {}
    gib = 2**30
    while not scorer.finished:
        trial = study.ask()
        scorer.replay.proposals += 1
        config = space.suggest(trial)
        if space.violations(config):
            study.tell(trial, state=TrialState.PRUNED)
            continue
        key = config.key()
        if key not in answers:
            record = scorer.grid.records[key]
            scorer.charge(config)
            ok = record.ok and record.measurement.latency_s is not None and record.memory_bytes is not None
            answers[key] = [float(record.measurement.latency_s or 0), (record.memory_bytes or 0) / gib] if ok else None
        values = answers[key]
        if values is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, values=values)


@dataclass
class SamplerResult:
    name: str
    replays: list[Replay]
    full: float

    def seconds_to(self, fraction: float) -> list[float | None]:
        return [r.seconds_to(self.full * fraction) for r in self.replays]

    def median_seconds_to(self, fraction: float) -> float | None:
        return median_or_none(self.seconds_to(fraction))

    def mean_fraction_at(self, spent: float) -> float:
        return statistics.fmean(r.at(spent) / self.full for r in self.replays) if self.full > 0 else 0.0


def median_or_none(values: Sequence[float | None]) -> float | None:
    """The median, counting None as never (infinite); None when the median is never."""
    if not values:
        return None
    median = statistics.median(math.inf if v is None else v for v in values)
    return None if math.isinf(median) else float(median)


@dataclass
class BenchResult:
    grid: Grid
    budget: int
    reference: Point
    full: float
    samplers: list[SamplerResult]

    @property
    def grid_seconds(self) -> float:
        return self.grid.total_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "grid_gpu_seconds": round(self.grid_seconds, 3),
            "samplers": {s.name: {"gpu_seconds_to_95": _rounded(s.median_seconds_to(TARGET))} for s in self.samplers},
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run_bench(
    grid: Grid,
    samplers: Sequence[str] = DEFAULT_SAMPLERS,
    seeds: int = 20,
    budget: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> BenchResult:
    """Replay ``grid`` with each sampler for seeds 0..seeds-1."""
    unknown = [s for s in samplers if s not in SAMPLERS]
    if unknown:
        raise InputError(f"unknown sampler(s) {', '.join(unknown)}; samplers: {', '.join(SAMPLERS)}")
    if seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {seeds}")
    budget = budget or grid.budget_bytes
    reference = reference_point(grid, budget)
    full = hypervolume_2d(feasible_points(grid, budget), reference)
    grid_space(grid)  # refuses a grid that its own space does not hold, before any replay
    results = []
    for name in samplers:
        replays = []
        for seed in range(seeds):
            if progress is not None:
                progress(name, seed)
            replays.append(run_replay(grid, name, seed, budget))
        results.append(SamplerResult(name, replays, full))
    return BenchResult(grid, budget, reference, full, results)
