"""What qco-tune measures next: the memory levels uncompiled, then compile what can reach the front, then refine it.

Stdlib only. A full-size trial costs about a minute eager and three to four compiled, and a user has about
half an hour of GPU time, so the search is staged by knob family as an expert stages it by hand, and the
fastest configuration that fits comes first, the rest of the front second. Each proposal is decided afresh
from the measured trials (nothing is kept in memory: a resumed study or a second worker plans the same way),
and it never enumerates the space: candidates are built from the knobs' values and the measured trials, so a
space of millions of configurations plans as fast as a small one.

1. **Memory levels, uncompiled** (the survey). A memory level is the quantization of every searched
   component with an offload kind; everything else at its default (compile none, native attention, no VAE
   tiling ...); group offloading with the guide's options (a stream, non-blocking copies). The levels are
   taken by *family* (the denoiser's backend and the offload kind: they decide the speed), each family once,
   with the text encoders quantized just enough to be predicted to fit (``predict``). Families predicted to
   fit come first, resident before offloaded (offloading is slower at the same quantization), then by the
   latency they are expected to reach compiled (``PRIOR_EAGER`` / ``PRIOR_SPEEDUP``: float8 dynamic is slow
   eager and the fastest compiled). The survey ends when no family is left, after ``SURVEY_SHARE`` of a trial
   target, or once ``MIN_SURVEY`` levels are measured and the last ``SURVEY_PATIENCE`` did not enlarge the
   front of what the measured trials could reach compiled. A level that promises the front's best (its
   latency divided by its backend's speed-up faster than every other feasible trial) is compiled
   at once, cheapest variant, before the survey goes on: the likely winner should not wait for the map
   (on the H200 a float8 level, slow eager, would otherwise wait behind two more eager levels, 2-3 minutes).
2. **Compile.** For every measured configuration at default settings whose compiled variant could still
   enlarge the front (an eager latency divided by its denoiser backend's speed-up, measured in the study or
   else the prior, with a margin; the fastest compiled variant of a configuration, if on the front, by
   ``REFINE_SPEEDUP`` shrinking with each variant measured), a compile variant is a candidate: an eager
   configuration's cheapest (regional, default mode, no fullgraph), a compiled one's neighbours (one compile
   knob changed, cheapest first: fullgraph, then the mode in the order of ``COMPILE_MODES``, then the scope),
   at most ``MAX_COMPILE_VARIANTS`` per configuration. Those hoped to beat the fastest feasible trial come
   first (the fastest fitting configuration is what a user runs); among them, and then among the rest, the
   one that adds the most hypervolume per expected second (compile costs learned from the study, by
   quantization: ``trial_cost``) goes next.
3. **Refine.** From each front configuration, fastest first, one knob at a time along every knob of the space
   that is neither a memory level's (``quant.*``, ``PLACEMENT_KNOBS``) nor a compile knob: attention backend,
   VAE settings, layerwise casting, tf32, and any knob added later; the first untried value that can run.
4. Nothing left: None, and the sampler proposes over the whole space (TPE).

Everything a plan proposes is checked by the caller's ``runnable`` (rules, duplicates, the memory model), so
a plan never costs a skipped proposal.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from qco_tune.core.config import COMPILE_MODES, GROUP_OFFLOADS, TrialConfig
from qco_tune.search.frontier import Point, hypervolume_2d, pareto_points
from qco_tune.search.space import SearchSpace
from qco_tune.search.trial_cost import compile_cost, compile_costs

COMPILE_KNOBS = ("compile", "compile_mode", "fullgraph")
"""Stage 2's knobs."""
OFFLOAD_KNOB = "offload"
PLACEMENT_KNOBS = (OFFLOAD_KNOB, "blocks_per_group", "use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage")
"""Where the components live: with ``quant.*`` a memory level's knobs (stage 1). Stage 3 refines every knob of
the space that is neither these nor a compile knob."""

# Priors, before the study measures a backend. Source: DESIGN.md's table "Measured on an H100 80GB,
# 2026-11-24" (FLUX.1-dev transformer, random weights, 1024², s/step): bf16 eager 0.184, bf16 + regional
# compile 0.135; bnb nf4 eager 0.199, + full compile 0.147; torchao fp8 dynamic (per-row) eager 0.352,
# + regional compile 0.108. bnb fp4 is taken as nf4 (the same kernels).
PRIOR_EAGER: dict[str, float] = {
    "none": 1.0,
    "bnb_nf4": 0.199 / 0.184,
    "bnb_fp4": 0.199 / 0.184,
    "torchao_fp8dq": 0.352 / 0.184,
}
"""A backend's eager time relative to the unquantized model's."""
PRIOR_SPEEDUP: dict[str, float] = {
    "none": 0.184 / 0.135,
    "bnb_nf4": 0.199 / 0.147,
    "bnb_fp4": 0.199 / 0.147,
    "torchao_fp8dq": 0.352 / 0.108,
}
"""Eager / compiled time of a denoiser quantized with a backend."""
UNKNOWN_EAGER = 1.1
"""A backend not in ``PRIOR_EAGER``: a little slower than unquantized (dequantization)."""
UNKNOWN_SPEEDUP = PRIOR_SPEEDUP["none"]
"""A backend not in ``PRIOR_SPEEDUP`` compiles like the unquantized model."""
PRIOR_OFFLOAD: dict[str, float] = {"none": 1.0, "model": 2.0, "group_leaf": 2.8, "group_block": 3.0, "sequential": 10.0}
"""Latency factor of an offload kind. Model offload: 8.624 s against 4.221 s resident (NF4, compiled, H200,
measurements/h200-2026-12-01); group offloading: 0.516 s/step (leaf) and 0.543 (block) against 0.184 eager
(DESIGN.md's H100 table); sequential offload moves every layer at every call (a guess)."""
PRIOR_BYTES: dict[str, float] = {"none": 2.0, "bnb_nf4": 0.5, "bnb_fp4": 0.5, "torchao_int4wo": 0.5, "quanto_int4": 0.5}
"""Bytes per weight of a backend (others: 8-bit, 1.0): which quantization of a component is the most compact."""
PREFERRED_PLACEMENT: dict[str, Any] = {
    "use_stream": True,
    "non_blocking": True,
    "record_stream": False,
    "low_cpu_mem_usage": False,
}
"""Group offloading's options in a memory level: the guide's (prefetch on a stream, non-blocking copies)."""
DENOISER_CALLS = 28
"""The denoiser runs once per step, a text encoder once per call: how a component's weight counts in latency."""

MIN_SURVEY = 2
"""Searched memory levels measured at least before the survey may end by patience."""
SURVEY_PATIENCE = 2
"""The survey ends after this many searched memory levels in a row that leave the reachable front unchanged."""
SURVEY_SHARE = 0.25
"""The survey ends when it has measured this share of a trial target (at least one level)."""
SURVEY_MAX = 8
"""Searched memory levels at most, in a study without a trial target."""
LEVELS_PER_FAMILY = 2
"""A family whose levels did not fit is tried again with a more compact level, this many levels in all."""
MAX_CHECKS = 400
"""Predictions and ``runnable`` calls at most per proposal (each costs about 0.1 ms): a bound on planning time."""
SPEEDUP_MARGIN = 1.25
"""Optimism on a speed-up (another compile variant may do better)."""
PROMISE = 1.0
"""A level is compiled during the survey when its hoped compiled latency (eager / speed-up, no margin) beats
the fastest other feasible trial by this factor: when the prior alone predicts a new fastest. On the H200 the
float8 level ran 12.4 s eager and hopes for 3.8 s (the prior 3.26x; 4.07x measured by hand) against the NF4
recipe's 4.22 s; a stricter factor (1.15) let two slow eager levels run first (one over 3 minutes)."""
REFINE_SPEEDUP = 1.3
"""A compiled front configuration's next compile variant is assumed possibly this much faster (divided by the
variants measured so far: each one that did not help makes the next less promising)."""
MAX_COMPILE_VARIANTS = 3
"""Compile variants measured at most per configuration (each costs minutes of first call)."""
NEAR_BUDGET = 1.1
"""An eager configuration this close over the budget may fit compiled (fused kernels keep fewer activations)."""
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
    seeded: bool = False
    """A seeded baseline (the reference, a guide's recipe): measured, but not a trial of the search."""


Stage = Literal["survey", "compile", "refine"]
"""What a planned configuration is for (``stage_of``)."""


def plan_next(
    space: SearchSpace,
    done: Sequence[Done],
    tried: set[str],
    runnable: Callable[[TrialConfig], bool],
    *,
    budget_bytes: float,
    target: int | None = None,
    predict: Callable[[TrialConfig], float | None] | None = None,
) -> TrialConfig | None:
    """The next configuration to measure, or None (the sampler's choice over the whole space).

    ``tried`` holds the keys of every configuration measured, failed or running; ``runnable`` says whether
    a configuration may run (rules, duplicates, the memory model); ``predict`` is the memory model's
    predicted peak in bytes (None: unknown), used to prefer memory levels that fit ``budget_bytes``.
    """
    return _Planner(space, done, tried, runnable, budget_bytes, predict).next(target)


def stage_of(space: SearchSpace, config: TrialConfig) -> Stage:
    """Which stage proposes a configuration like ``config``: a memory level, a compile variant, a refinement."""
    planner = _Planner(space, (), set(), lambda c: True, 0.0, None)
    if not planner.at_base_settings(config):
        return "refine"
    return "survey" if config.compile == planner.base_compile else "compile"


class _Planner:
    """One proposal's planning: the space's knobs, the measured trials and a cache of checks."""

    def __init__(
        self,
        space: SearchSpace,
        done: Sequence[Done],
        tried: set[str],
        runnable: Callable[[TrialConfig], bool],
        budget_bytes: float,
        predict: Callable[[TrialConfig], float | None] | None,
    ) -> None:
        self.space = space
        self.knobs = space.knobs()
        self.done = sorted(done, key=lambda d: d.number)
        self.tried = tried
        self.budget = budget_bytes
        self._runnable = runnable
        self._predict = predict
        self._checked: dict[str, bool] = {}
        self._predicted: dict[str, float | None] = {}
        self.checks = 0
        self._speedup_cache: dict[str, float] | None = None
        self._placement_cache: dict[str, list[dict[str, Any]]] = {}
        self.denoiser = space.model.denoiser
        self.components = space.components
        self.secondary = [
            k for k in self.knobs if not k.startswith("quant.") and k not in COMPILE_KNOBS and k not in PLACEMENT_KNOBS
        ]
        defaults = TrialConfig()
        self.base_settings = {
            k: getattr(defaults, k) if getattr(defaults, k) in self.knobs[k] else self.knobs[k][0]
            for k in self.secondary
        }
        variants = self.compile_kinds = self._compile_kinds()  # the space's, fixed: computed once
        scopes = self.knobs.get("compile", ("none",))
        self.base_compile = "none" if "none" in scopes else (variants[0]["compile"] if variants else scopes[0])
        self.base_compile_knobs = {"compile": "none"} if self.base_compile == "none" else (variants or [{}])[0]

    # -- checks ------------------------------------------------------------------------------------------------

    def runnable(self, config: TrialConfig) -> bool:
        key = config.key()
        if key in self.tried:
            return False
        if key not in self._checked:
            self.checks += 1
            self._checked[key] = self._runnable(config)
        return self._checked[key]

    def need(self, config: TrialConfig) -> float | None:
        """The memory model's prediction in bytes (None: unknown)."""
        if self._predict is None:
            return None
        key = config.key()
        if key not in self._predicted:
            self.checks += 1
            self._predicted[key] = self._predict(config)
        return self._predicted[key]

    def fits(self, config: TrialConfig, under: float = float("inf")) -> bool:
        """Predicted within the budget, and under ``under`` (True when the memory model cannot tell)."""
        need = self.need(config)
        return need is None or (need <= self.budget and need < under)

    def spent(self) -> bool:
        return self.checks >= MAX_CHECKS

    # -- the stages --------------------------------------------------------------------------------------------

    def next(self, target: int | None) -> TrialConfig | None:
        if self.surveying(target):
            early = self.promising_compile()
            if early is not None:
                return early
            level = self.survey_level()
            if level is not None:
                return level
        return self.compile_variant() or self.refinement()

    def at_base_settings(self, config: TrialConfig) -> bool:
        return all(getattr(config, k) == v for k, v in self.base_settings.items())

    def is_level(self, config: TrialConfig) -> bool:
        """A memory level: uncompiled (or the base compile), every setting at its default."""
        return config.compile == self.base_compile and self.at_base_settings(config)

    def surveying(self, target: int | None) -> bool:
        searched = [d for d in self.done if not d.seeded]
        if any(not self.is_level(d.config) and not self.is_level_compile(d.config) for d in searched):
            return False  # a later stage has begun: the survey does not come back
        levels = [d for d in searched if self.is_level(d.config)]
        cap = max(1, round(target * SURVEY_SHARE)) if target is not None else SURVEY_MAX
        if len(levels) >= cap:
            return False
        if len(levels) < MIN_SURVEY:
            return True
        last = levels[-1].number
        reference = self._reference([self._reachable(d) for d in self.done if d.number <= last])
        stale, previous = 0, 0.0
        for d in levels:
            hv = hypervolume_2d([self._reachable(x) for x in self.done if x.number <= d.number], reference)
            before = hypervolume_2d([self._reachable(x) for x in self.done if x.number < d.number], reference)
            previous = max(previous, before)
            stale = 0 if hv > previous * (1 + IMPROVEMENT) and hv > 0 else stale + 1
        return stale < SURVEY_PATIENCE

    def is_level_compile(self, config: TrialConfig) -> bool:
        """The cheapest compile variant of a measured memory level: the survey's early compile, or stage 2's
        first step; neither ends the survey by itself."""
        kinds = self.compile_kinds
        if self.base_compile != "none" or not kinds or not self.at_base_settings(config):
            return False
        cheapest = kinds[0]
        if (config.compile, config.compile_mode, config.fullgraph) != tuple(cheapest.values()):
            return False
        key = _eager_key(config)
        return any(self.is_level(d.config) and _eager_key(d.config) == key for d in self.done)

    def promising_compile(self) -> TrialConfig | None:
        """The cheapest compile variant of a measured level whose hoped compiled latency beats every other
        feasible trial by ``PROMISE``, if it has no compiled variant yet (with none to beat: nothing)."""
        kinds = self.compile_kinds
        feasible = [d for d in self.done if d.feasible and d.latency_s]
        if self.base_compile != "none" or not kinds or not feasible:
            return None
        compiled = {_eager_key(d.config) for d in self.done if d.config.compile != "none"}
        levels = [
            d
            for d in self.done
            if d.feasible and d.latency_s and self.is_level(d.config) and _eager_key(d.config) not in compiled
        ]
        for d in sorted(levels, key=lambda d: d.latency_s / self.speedup(d.config)):  # type: ignore[operator]
            assert d.latency_s is not None
            best = min((x.latency_s or 0.0 for x in feasible if x.number != d.number), default=0.0)
            if d.latency_s / self.speedup(d.config) * PROMISE >= best:
                continue
            for variant in self._variants(d.config, kinds[:1]):
                if self.runnable(variant):
                    return variant
        return None

    def _reachable(self, d: Done) -> Point:
        """Where a trial could be on the front: an eager one compiled (prior or measured speed-up), as measured
        otherwise; nothing (an infinite point) for one that failed or was over the budget."""
        if d.latency_s is None or d.memory_bytes is None:
            return (float("inf"), float("inf"))
        eager = d.config.compile == "none"
        if not d.feasible and not (eager and d.memory_bytes <= self.budget * NEAR_BUDGET):
            return (float("inf"), float("inf"))
        latency = d.latency_s / self.speedup(d.config) if eager else d.latency_s
        return (latency, min(d.memory_bytes, self.budget))

    # -- stage 1: memory levels --------------------------------------------------------------------------------

    def survey_level(self) -> TrialConfig | None:
        families = self._open_families()
        order = []
        for index, ((backend, offload), under) in enumerate(families.items()):
            compact = self._level({**self._compact_quant(), **self._denoiser_quant(backend)}, offload, 0)
            fits = compact is not None and self.fits(compact, under)
            expected = self._factor(backend, compiled=True) * PRIOR_OFFLOAD.get(offload, 3.0)
            order.append((not fits, offload != "none", expected, index, backend, offload))
        order.sort()
        for unfit, _, _, _, backend, offload in order:
            if self.spent():
                return None
            for level in self._family_levels(backend, offload, families[backend, offload], fitting=not unfit):
                if self.runnable(level):
                    return level
                if self.spent():
                    return None
        return None

    def _open_families(self) -> dict[tuple[str, str], float]:
        """(denoiser backend, offload kind) pairs without a level that fitted, nor ``LEVELS_PER_FAMILY`` tries,
        each with the prediction a new level must stay under: that of its levels that did not fit (or infinity)."""
        tries: dict[tuple[str, str], int] = {}
        under: dict[tuple[str, str], float] = {}
        covered = set()
        for d in self.done:
            family = (d.config.backend_for(self.denoiser), d.config.offload)
            tries[family] = tries.get(family, 0) + 1
            if d.feasible or tries[family] >= LEVELS_PER_FAMILY:
                covered.add(family)
            else:
                need = self.need(d.config)
                if need is not None:
                    under[family] = min(under.get(family, float("inf")), need)
        backends = self.knobs.get(f"quant.{self.denoiser}", ("none",))
        offloads = self.knobs.get(OFFLOAD_KNOB, ("none",))
        return {(b, o): under.get((b, o), float("inf")) for b in backends for o in offloads if (b, o) not in covered}

    def _denoiser_quant(self, backend: str) -> dict[str, str]:
        return {self.denoiser: backend} if self.denoiser in self.components else {}

    def _encoders(self) -> list[str]:
        """The searched components other than the denoiser, largest first."""
        sizes = {c.name: c.params or 0 for c in self.space.model.components}
        return sorted((c for c in self.components if c != self.denoiser), key=lambda c: -sizes.get(c, 0))

    def _compact_quant(self) -> dict[str, str]:
        """Every searched component at its most compact backend (``PRIOR_BYTES``)."""
        out = {}
        for component in self.components:
            choices = self.knobs[f"quant.{component}"]
            out[component] = min(choices, key=lambda b: (PRIOR_BYTES.get(b, 1.0), choices.index(b)))
        return out

    def _family_levels(self, backend: str, offload: str, under: float, *, fitting: bool) -> Iterator[TrialConfig]:
        """A family's memory levels: the text encoders fastest first among those predicted to fit (each encoder,
        largest first, keeps the fastest backend with which a fit is still possible), in each placement variant;
        only the most compact one for a family that is not predicted to fit at all. Where a level of the family did
        not fit, only levels predicted under it (``under``) come."""
        compact = self._compact_quant()
        denoiser = self._denoiser_quant(backend)
        if not fitting:
            for variant in range(len(self._placements(offload))):
                level = self._level({**compact, **denoiser}, offload, variant)
                if level is not None:
                    yield level
            return
        encoders = self._encoders()

        def assign(chosen: dict[str, str], rest: list[str]) -> Iterator[dict[str, str]]:
            if not rest:
                yield chosen
                return
            component, *others = rest
            choices = self.knobs[f"quant.{component}"]
            for b in sorted(choices, key=lambda b: (self._factor(b, compiled=False), choices.index(b))):
                trial = {**chosen, component: b}
                probe = self._level({**compact, **trial, **denoiser}, offload, 0)
                if probe is None or not self.fits(probe, under):
                    continue  # not even with the rest at their most compact
                yield from assign(trial, others)
                if self.spent():
                    return

        for quant in assign({}, encoders):
            for variant in range(len(self._placements(offload))):
                level = self._level({**quant, **denoiser}, offload, variant)
                if level is not None:
                    yield level

    def _level(self, quant: dict[str, str], offload: str, variant: int) -> TrialConfig | None:
        placements = self._placements(offload)
        if variant >= len(placements):
            return None
        return SearchSpace.config_from(quant, **self.base_compile_knobs, **self.base_settings, **placements[variant])

    def _placements(self, offload: str) -> list[dict[str, Any]]:
        """An offload kind with its group options, the guide's first, then by how many options differ."""
        if offload in self._placement_cache:
            return self._placement_cache[offload]
        if offload not in GROUP_OFFLOADS:
            return [{OFFLOAD_KNOB: offload}]
        names = [k for k in ("blocks_per_group", *PREFERRED_PLACEMENT) if k in self.knobs]
        if offload != "group_block":
            names = [k for k in names if k != "blocks_per_group"]
        orders = []
        for name in names:
            choices = list(self.knobs[name])
            preferred = PREFERRED_PLACEMENT.get(name, choices[0])
            orders.append(sorted(choices, key=lambda v: (v != preferred, choices.index(v))))
        out: dict[str, dict[str, Any]] = {}
        for picks in sorted(itertools.product(*(range(len(o)) for o in orders)), key=lambda p: sum(x > 0 for x in p)):
            params = {OFFLOAD_KNOB: offload, **{n: o[i] for n, o, i in zip(names, orders, picks, strict=True)}}
            out.setdefault(SearchSpace.config_from({}, **params).key(), params)
        self._placement_cache[offload] = list(out.values())
        return self._placement_cache[offload]

    def _factor(self, backend: str, *, compiled: bool) -> float:
        eager = PRIOR_EAGER.get(backend, UNKNOWN_EAGER)
        return eager / PRIOR_SPEEDUP.get(backend, UNKNOWN_SPEEDUP) if compiled else eager

    # -- stage 2: compile ----------------------------------------------------------------------------------

    def _compile_kinds(self) -> list[dict[str, Any]]:
        """Every compile variant of the space (scope, mode, fullgraph), cheapest first."""
        scopes = [s for s in self.knobs.get("compile", ()) if s != "none"]
        modes = self.knobs.get("compile_mode", ("default",))
        graphs = self.knobs.get("fullgraph", (False,))
        kinds = [{"compile": s, "compile_mode": m, "fullgraph": g} for s in scopes for m in modes for g in graphs]
        return sorted(kinds, key=lambda k: _compile_cost(k["compile"], k["compile_mode"], k["fullgraph"]))

    def speedup(self, config: TrialConfig) -> float:
        """Eager / compiled latency for ``config``'s denoiser backend: the largest measured, else the prior."""
        backend = config.backend_for(self.denoiser)
        return self._speedups().get(backend) or PRIOR_SPEEDUP.get(backend, UNKNOWN_SPEEDUP)

    def _speedups(self) -> dict[str, float]:
        if self._speedup_cache is None:
            eager = {_eager_key(d.config): d.latency_s for d in self.done if d.config.compile == "none" and d.latency_s}
            out: dict[str, float] = {}
            for d in self.done:
                base = eager.get(_eager_key(d.config)) if d.config.compile != "none" and d.latency_s else None
                if base and d.latency_s:
                    backend = d.config.backend_for(self.denoiser)
                    out[backend] = max(out.get(backend, 0.0), base / d.latency_s)
            self._speedup_cache = out
        return self._speedup_cache

    def compile_variant(self) -> TrialConfig | None:
        kinds = self.compile_kinds
        measured = [d for d in self.done if d.latency_s is not None and d.memory_bytes is not None]
        feasible = [d for d in measured if d.feasible]
        if not kinds or not feasible:
            return None
        near = [
            d
            for d in measured
            if not d.feasible and d.config.compile == "none" and (d.memory_bytes or 0) <= self.budget * NEAR_BUDGET
        ]
        points = _points(feasible)
        reference = (max(p[0] for p in points) * 1.1, max(self.budget, *(p[1] for p in points)) * 1.1)
        current = hypervolume_2d(points, reference)
        front = {d.number for d in _front(feasible)}
        fastest_latency = min(p[0] for p in points)
        costs = compile_costs(self.done)
        compiled: dict[str, list[Done]] = {}
        for d in self.done:
            if d.config.compile != "none":
                compiled.setdefault(_eager_key(d.config), []).append(d)
        ranked = []
        for d in [*feasible, *near]:
            assert d.latency_s is not None and d.memory_bytes is not None
            if not self.at_base_settings(d.config):
                continue  # a refinement (stage 3): compiling is settled for it
            variants_of = compiled.get(_eager_key(d.config), [])
            if d.config.compile == "none":
                if variants_of:
                    continue  # compiled already: its fastest compiled variant carries on
                factor = self.speedup(d.config) * SPEEDUP_MARGIN
                variants = self._variants(d.config, kinds)
            else:
                fastest = min((v for v in variants_of if v.feasible and v.latency_s), key=_latency, default=None)
                if fastest is not d or d.number not in front:
                    continue
                if len(variants_of) >= MAX_COMPILE_VARIANTS:
                    continue
                factor = 1 + (REFINE_SPEEDUP - 1) / len(variants_of)
                variants = self._neighbours(d.config)
            hoped = (d.latency_s / factor, min(d.memory_bytes, self.budget))
            gain = hypervolume_2d([*points, hoped], reference) - current
            could_be_fastest = hoped[0] < fastest_latency  # a gain however small against slow trials' area
            if gain <= current * IMPROVEMENT and current > 0 and not could_be_fastest:
                continue
            variants = [v for v in variants if v.key() not in self.tried]
            if variants:
                ranked.append((not could_be_fastest, -gain / compile_cost(variants[0], costs), -d.number, variants))
        ranked.sort(key=lambda r: r[:3])
        for *_, variants in ranked:
            for variant in variants:
                if self.runnable(variant):
                    return variant
                if self.spent():
                    return None
        return None

    def _variants(self, config: TrialConfig, kinds: list[dict[str, Any]]) -> list[TrialConfig]:
        """``config`` with each compile variant of ``kinds``, in that order."""
        params = {k: v for k, v in config.to_params().items() if not k.startswith("quant.") and k not in COMPILE_KNOBS}
        out = [SearchSpace.config_from(config.quant_map, **params, **kind) for kind in kinds]
        return [v for v in out if v.key() != config.key()]

    def _neighbours(self, config: TrialConfig) -> list[TrialConfig]:
        """A compiled configuration with one compile knob changed, cheapest first (``_compile_cost``): fullgraph,
        then the mode (in the order of ``COMPILE_MODES``: default before autotuning), then the scope (regional
        to whole). On the H200 a float8 transformer compiled whole had not finished its first call after 387 s,
        while regional with fullgraph (the hand-built case) took 198.5 s."""
        kinds = []
        scope, mode, graph = config.compile, config.compile_mode, config.fullgraph
        kinds += [{"compile": scope, "compile_mode": mode, "fullgraph": g} for g in self.knobs.get("fullgraph", ())]
        kinds += [{"compile": scope, "compile_mode": m, "fullgraph": graph} for m in self.knobs.get("compile_mode", ())]
        kinds += [{"compile": s, "compile_mode": mode, "fullgraph": graph} for s in self.knobs["compile"]]
        kinds = [k for k in kinds if k["compile"] != "none"]
        kinds.sort(key=lambda k: _compile_cost(k["compile"], k["compile_mode"], k["fullgraph"]))
        return self._variants(config, kinds)

    # -- stage 3: refine ---------------------------------------------------------------------------------------

    def refinement(self) -> TrialConfig | None:
        for d in _front(self.done):
            config = d.config
            params = {k: v for k, v in config.to_params().items() if not k.startswith("quant.")}
            for knob in self.secondary:
                current = getattr(config, knob)
                for value in self.knobs[knob]:
                    if value == current:
                        continue
                    candidate = SearchSpace.config_from(config.quant_map, **{**params, knob: value})
                    if candidate.key() == config.key():
                        continue  # the knob means nothing here (a group option without group offloading)
                    if self.runnable(candidate):
                        return candidate
                    if self.spent():
                        return None
        return None

    @staticmethod
    def _reference(points: list[Point]) -> Point:
        finite = [p for p in points if p[0] != float("inf")]
        return (
            max((p[0] for p in finite), default=1.0) * 1.1 + 1e-9,
            max((p[1] for p in finite), default=1.0) * 1.1 + 1,
        )


def _eager_key(config: TrialConfig) -> str:
    """The configuration without its compile knobs."""
    params = {k: v for k, v in config.to_params().items() if k not in COMPILE_KNOBS}
    return TrialConfig.from_params(params).key()


def _compile_cost(scope: str, mode: str, fullgraph: bool) -> tuple[int, int, bool]:
    return (SCOPE_COST.get(scope, 2), MODE_COST.get(mode, 9), fullgraph)


def _front(done: Sequence[Done]) -> list[Done]:
    """The feasible trials on the Pareto front, fastest first; of several with the same figures the first."""
    feasible = [d for d in done if d.feasible and d.latency_s is not None and d.memory_bytes is not None]
    front = set(pareto_points(_points(feasible)))
    out: dict[Point, Done] = {}
    for d in sorted(feasible, key=lambda d: d.number):
        point = (float(d.latency_s or 0), float(d.memory_bytes or 0))
        if point in front:
            out.setdefault(point, d)
    return sorted(out.values(), key=lambda d: (d.latency_s or 0, d.number))


def _latency(d: Done) -> float:
    return d.latency_s if d.latency_s is not None else float("inf")


def _points(done: Sequence[Done]) -> list[Point]:
    return [
        (float(d.latency_s), float(d.memory_bytes))
        for d in done
        if d.feasible and d.latency_s is not None and d.memory_bytes is not None
    ]
