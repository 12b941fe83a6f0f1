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
from qco_tune.core.records import Measurement, TrialRequest
from qco_tune.core.units import format_size
from qco_tune.loop.context import RunResult, SilentObserver, _Context
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
            model=base.model, caps=base.caps, allowed=base._allowed, knobs=base._knobs, missing=base._missing
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
        raise ValueError(f"unknown sampler {sampler!r}; samplers: {', '.join(SAMPLERS)}")
    return scorer.replay


def _qco_replay(grid: Grid, space: GridSpace, scorer: Scorer, seed: int, budget: int, *, plan: bool) -> None:
    """qco-tune's own loop (``study.run_loop``) on an in-memory study, with the grid as the trial runner."""
    import optuna

    spec = dataclasses.replace(grid.spec, name=f"bench-{seed}", vram_budget=budget, trials=None, timeout=None)
    study, _ = open_study(spec, optuna.storages.InMemoryStorage(), grid.model, grid.caps, space, seed=seed)
    ctx = _Context(spec, grid.model, grid.caps, space, study, _Counting(scorer), {}, execute=scorer.execute, plan=plan)
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


# -- many seeds, a summary ---------------------------------------------------------------------------------


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
        raise ValueError(f"unknown sampler(s) {', '.join(unknown)}; samplers: {', '.join(SAMPLERS)}")
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
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


def format_table(result: BenchResult) -> str:
    """The per-sampler summary as an aligned text table."""
    total = result.grid_seconds
    seeds = len(result.samplers[0].replays) if result.samplers else 0
    lines = [
        f"grid: {len(result.grid.records)} configurations, {total:,.0f} GPU s to measure them all; "
        f"budget {format_size(result.budget)}; {seeds} seed(s)",
        f"reference point: {result.reference[0]:.4g} s, {format_size(result.reference[1])}; "
        f"front of the whole grid: {len(_front(result))} configuration(s)",
        *([f"note: {result.grid.note}"] if result.grid.note else []),
        "",
        f"{'sampler':16s} {'GPU s to 95%':>13s} {'% of grid':>9s} {'seeds':>6s} {'to 100%':>9s} "
        f"{'HV@10%':>7s} {'HV@20%':>7s} {'HV@50%':>7s} {'trials':>7s}",
    ]
    for s in result.samplers:
        to95 = s.median_seconds_to(TARGET)
        to100 = s.median_seconds_to(1.0)
        reached = sum(v is not None for v in s.seconds_to(TARGET))
        trials = statistics.median(r.trials for r in s.replays)
        lines.append(
            f"{s.name:16s} {_num(to95):>13s} {_pct(to95, total):>9s} {f'{reached}/{len(s.replays)}':>6s} "
            f"{_num(to100):>9s} {s.mean_fraction_at(0.1 * total):>7.0%} {s.mean_fraction_at(0.2 * total):>7.0%} "
            f"{s.mean_fraction_at(0.5 * total):>7.0%} {trials:>7.0f}"
        )
    lines += [
        "",
        "GPU s to 95%: median over seeds of the recorded seconds spent until the feasible front's hypervolume",
        "reached 95% of the whole grid's; HV@x%: mean fraction of that hypervolume after x% of the grid's",
        "seconds; trials: median trials measured until the whole front was found (or the grid was spent).",
    ]
    return "\n".join(lines)


def _front(result: BenchResult) -> list[Point]:
    from qco_tune.search.frontier import pareto_points

    return pareto_points(feasible_points(result.grid, result.budget))


def _num(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f}"


def _pct(value: float | None, total: float) -> str:
    return "-" if value is None or total <= 0 else f"{value / total:.0%}"


# -- the plot (a small self-written SVG: no plotting dependency) -------------------------------------------

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def render_svg(result: BenchResult, width: int = 720, height: int = 420) -> str:
    """Mean hypervolume fraction against GPU seconds, one line per sampler, with the 95 % level dashed."""
    left, right, top, bottom = 64, 170, 36, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    total = max(result.grid_seconds, 1e-9)

    def x(spent: float) -> float:
        return left + plot_w * min(spent, total) / total

    def y(fraction: float) -> float:
        return top + plot_h * (1 - fraction)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14">Feasible-front hypervolume vs GPU seconds '
        f"(mean of {len(result.samplers[0].replays) if result.samplers else 0} seeds)</text>",
    ]
    for i in range(6):  # grid lines and ticks
        fraction = i / 5
        out.append(
            f'<line x1="{left}" y1="{y(fraction):.1f}" x2="{left + plot_w}" y2="{y(fraction):.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 6}" y="{y(fraction) + 4:.1f}" text-anchor="end">{fraction:.0%}</text>')
        spent = total * i / 5
        out.append(f'<line x1="{x(spent):.1f}" y1="{top}" x2="{x(spent):.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{x(spent):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{spent:,.0f}</text>')
    out.append(
        f'<line x1="{left}" y1="{y(TARGET):.1f}" x2="{left + plot_w}" y2="{y(TARGET):.1f}" stroke="#888" '
        'stroke-dasharray="5,4"/>'
    )
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">GPU seconds spent '
        f"(the whole grid: {total:,.0f} s)</text>"
    )
    out.append(
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 16 {top + plot_h / 2})">'
        "hypervolume / whole grid's</text>"
    )
    steps = 200
    for index, sampler in enumerate(result.samplers):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(
            f"{x(total * k / steps):.1f},{y(sampler.mean_fraction_at(total * k / steps)):.1f}" for k in range(steps + 1)
        )
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + 14 + 18 * index
        out.append(
            f'<line x1="{left + plot_w + 12}" y1="{ly}" x2="{left + plot_w + 32}" y2="{ly}" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        out.append(f'<text x="{left + plot_w + 38}" y="{ly + 4}">{_xml(sampler.name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
