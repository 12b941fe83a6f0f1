"""What every stage of the plan shares: the measured trials, the space's knobs and a bounded cache of checks.

Stdlib only. The stages are ``plan_survey`` (memory levels), ``plan_compile`` (compile variants) and the
refinement in ``planner``, which puts them together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qco_tune.core.config import TrialConfig
from qco_tune.search.frontier import Point, pareto_points
from qco_tune.search.plan_tuning import (
    COMPILE_KNOBS,
    MAX_CHECKS,
    MODE_COST,
    PLACEMENT_KNOBS,
    PRIOR_EAGER,
    PRIOR_SPEEDUP,
    SCOPE_COST,
    UNKNOWN_EAGER,
    UNKNOWN_SPEEDUP,
)
from qco_tune.search.space import SearchSpace


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


class PlanBase:
    """One proposal's planning state: the space's knobs, the measured trials and a cache of checks."""

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
            k
            for k in self.knobs
            if not k.startswith(("quant.", "place.")) and k not in COMPILE_KNOBS and k not in PLACEMENT_KNOBS
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

    # -- what the stages share ---------------------------------------------------------------------------------

    def at_base_settings(self, config: TrialConfig) -> bool:
        return all(getattr(config, k) == v for k, v in self.base_settings.items())

    def is_level(self, config: TrialConfig) -> bool:
        """A memory level: uncompiled (or the base compile), every setting at its default."""
        return config.compile == self.base_compile and self.at_base_settings(config)

    def is_level_compile(self, config: TrialConfig) -> bool:
        """The cheapest compile variant of a measured memory level: the survey's early compile, or stage 2's
        first step; neither ends the survey by itself."""
        kinds = self.compile_kinds
        if self.base_compile != "none" or not kinds or not self.at_base_settings(config):
            return False
        cheapest = kinds[0]
        if (config.compile, config.compile_mode, config.fullgraph) != tuple(cheapest.values()):
            return False
        key = eager_key(config)
        return any(self.is_level(d.config) and eager_key(d.config) == key for d in self.done)

    # -- stage 2: compile ----------------------------------------------------------------------------------

    def _compile_kinds(self) -> list[dict[str, Any]]:
        """Every compile variant of the space (scope, mode, fullgraph), cheapest first."""
        scopes = [s for s in self.knobs.get("compile", ()) if s != "none"]
        modes = self.knobs.get("compile_mode", ("default",))
        graphs = self.knobs.get("fullgraph", (False,))
        kinds = [{"compile": s, "compile_mode": m, "fullgraph": g} for s in scopes for m in modes for g in graphs]
        return sorted(kinds, key=lambda k: compile_order(k["compile"], k["compile_mode"], k["fullgraph"]))

    def speedup(self, config: TrialConfig) -> float:
        """Eager / compiled latency for ``config``'s denoiser backend: the largest measured, else the prior."""
        backend = config.backend_for(self.denoiser)
        return self._speedups().get(backend) or PRIOR_SPEEDUP.get(backend, UNKNOWN_SPEEDUP)

    def _speedups(self) -> dict[str, float]:
        if self._speedup_cache is None:
            eager = {eager_key(d.config): d.latency_s for d in self.done if d.config.compile == "none" and d.latency_s}
            out: dict[str, float] = {}
            for d in self.done:
                base = eager.get(eager_key(d.config)) if d.config.compile != "none" and d.latency_s else None
                if base and d.latency_s:
                    backend = d.config.backend_for(self.denoiser)
                    out[backend] = max(out.get(backend, 0.0), base / d.latency_s)
            self._speedup_cache = out
        return self._speedup_cache

    def _variants(self, config: TrialConfig, kinds: list[dict[str, Any]]) -> list[TrialConfig]:
        """``config`` with each compile variant of ``kinds``, in that order."""
        params = {k: v for k, v in config.to_params().items() if not k.startswith("quant.") and k not in COMPILE_KNOBS}
        out = [SearchSpace.config_from(config.quant_map, **params, **kind) for kind in kinds]
        return [v for v in out if v.key() != config.key()]

    def _factor(self, backend: str, *, compiled: bool) -> float:
        eager = PRIOR_EAGER.get(backend, UNKNOWN_EAGER)
        return eager / PRIOR_SPEEDUP.get(backend, UNKNOWN_SPEEDUP) if compiled else eager

    @staticmethod
    def _reference(points: list[Point]) -> Point:
        finite = [p for p in points if p[0] != float("inf")]
        return (
            max((p[0] for p in finite), default=1.0) * 1.1 + 1e-9,
            max((p[1] for p in finite), default=1.0) * 1.1 + 1,
        )


def eager_key(config: TrialConfig) -> str:
    """The configuration without its compile knobs."""
    params = {k: v for k, v in config.to_params().items() if k not in COMPILE_KNOBS}
    return TrialConfig.from_params(params).key()


def compile_order(scope: str, mode: str, fullgraph: bool) -> tuple[int, int, bool]:
    return (SCOPE_COST.get(scope, 2), MODE_COST.get(mode, 9), fullgraph)


def front_of(done: Sequence[Done]) -> list[Done]:
    """The feasible trials on the Pareto front, fastest first; of several with the same figures the first."""
    feasible = [d for d in done if d.feasible and d.latency_s is not None and d.memory_bytes is not None]
    front = set(pareto_points(points_of(feasible)))
    out: dict[Point, Done] = {}
    for d in sorted(feasible, key=lambda d: d.number):
        point = (float(d.latency_s or 0), float(d.memory_bytes or 0))
        if point in front:
            out.setdefault(point, d)
    return sorted(out.values(), key=lambda d: (d.latency_s or 0, d.number))


def latency_of(d: Done) -> float:
    return d.latency_s if d.latency_s is not None else float("inf")


def points_of(done: Sequence[Done]) -> list[Point]:
    return [
        (float(d.latency_s), float(d.memory_bytes))
        for d in done
        if d.feasible and d.latency_s is not None and d.memory_bytes is not None
    ]
