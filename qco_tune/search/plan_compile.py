"""Stage 2 of the plan: compile what can still reach the front, the fastest fitting configuration first.

Stdlib only. See ``qco_tune.search.planner`` for the whole plan.
"""

from __future__ import annotations

from qco_tune.core.config import TrialConfig
from qco_tune.search.frontier import hypervolume_2d
from qco_tune.search.plan_base import Done, PlanBase, compile_order, eager_key, front_of, latency_of, points_of
from qco_tune.search.plan_tuning import (
    IMPROVEMENT,
    MAX_COMPILE_VARIANTS,
    NEAR_BUDGET,
    REFINE_SPEEDUP,
    SPEEDUP_MARGIN,
)
from qco_tune.search.trial_cost import compile_cost, compile_costs


class CompileStage(PlanBase):
    """Which compile variant to measure next."""

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
        points = points_of(feasible)
        reference = (max(p[0] for p in points) * 1.1, max(self.budget, *(p[1] for p in points)) * 1.1)
        current = hypervolume_2d(points, reference)
        front = {d.number for d in front_of(feasible)}
        fastest_latency = min(p[0] for p in points)
        costs = compile_costs(self.done)
        compiled: dict[str, list[Done]] = {}
        for d in self.done:
            if d.config.compile != "none":
                compiled.setdefault(eager_key(d.config), []).append(d)
        ranked = []
        for d in [*feasible, *near]:
            assert d.latency_s is not None and d.memory_bytes is not None
            if not self.at_base_settings(d.config):
                continue  # a refinement (stage 3): compiling is settled for it
            variants_of = compiled.get(eager_key(d.config), [])
            if d.config.compile == "none":
                if variants_of:
                    continue  # compiled already: its fastest compiled variant carries on
                factor = self.speedup(d.config) * SPEEDUP_MARGIN
                variants = self._variants(d.config, kinds)
            else:
                fastest = min((v for v in variants_of if v.feasible and v.latency_s), key=latency_of, default=None)
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

    def _neighbours(self, config: TrialConfig) -> list[TrialConfig]:
        """A compiled configuration with one compile knob changed, cheapest first (``compile_order``): fullgraph,
        then the mode (in the order of ``COMPILE_MODES``: default before autotuning), then the scope (regional
        to whole). On the H200 a float8 transformer compiled whole had not finished its first call after 387 s,
        while regional with fullgraph (the hand-built case) took 198.5 s."""
        kinds = []
        scope, mode, graph = config.compile, config.compile_mode, config.fullgraph
        kinds += [{"compile": scope, "compile_mode": mode, "fullgraph": g} for g in self.knobs.get("fullgraph", ())]
        kinds += [{"compile": scope, "compile_mode": m, "fullgraph": graph} for m in self.knobs.get("compile_mode", ())]
        kinds += [{"compile": s, "compile_mode": mode, "fullgraph": graph} for s in self.knobs["compile"]]
        kinds = [k for k in kinds if k["compile"] != "none"]
        kinds.sort(key=lambda k: compile_order(k["compile"], k["compile_mode"], k["fullgraph"]))
        return self._variants(config, kinds)
