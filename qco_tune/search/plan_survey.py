"""Stage 1 of the plan: the memory levels, uncompiled (the survey), and the early compile of a promising one.

Stdlib only. See ``qco_tune.search.planner`` for the whole plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from qco_tune.core.config import GROUP_OFFLOADS, TrialConfig
from qco_tune.search.frontier import Point, hypervolume_2d
from qco_tune.search.plan_base import Done, PlanBase, eager_key
from qco_tune.search.plan_tuning import (
    IMPROVEMENT,
    LEVELS_PER_FAMILY,
    MIN_SURVEY,
    NEAR_BUDGET,
    OFFLOAD_KNOB,
    PREFERRED_PLACEMENT,
    PRIOR_BYTES,
    PRIOR_OFFLOAD,
    PROMISE,
    SURVEY_MAX,
    SURVEY_PATIENCE,
    SURVEY_SHARE,
)
from qco_tune.search.space import SearchSpace


class SurveyStage(PlanBase):
    """Which memory level to measure next, and when the survey is over."""

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

    def promising_compile(self) -> TrialConfig | None:
        """The cheapest compile variant of a measured level whose hoped compiled latency beats every other
        feasible trial by ``PROMISE``, if it has no compiled variant yet (with none to beat: nothing)."""
        kinds = self.compile_kinds
        feasible = [d for d in self.done if d.feasible and d.latency_s]
        if self.base_compile != "none" or not kinds or not feasible:
            return None
        compiled = {eager_key(d.config) for d in self.done if d.config.compile != "none"}
        levels = [
            d
            for d in self.done
            if d.feasible and d.latency_s and self.is_level(d.config) and eager_key(d.config) not in compiled
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
        if offload == "none":  # resident, then with the text encoders released after use where searched
            released = {k: "released" for k, v in self.knobs.items() if k.startswith("place.") and "released" in v}
            self._placement_cache[offload] = [{OFFLOAD_KNOB: offload}] + (
                [{OFFLOAD_KNOB: offload, **released}] if released else []
            )
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
