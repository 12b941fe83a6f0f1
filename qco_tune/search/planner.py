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

from collections.abc import Callable, Sequence
from typing import Literal

from qco_tune.core.config import TrialConfig
from qco_tune.search.plan_base import Done, front_of
from qco_tune.search.plan_compile import CompileStage
from qco_tune.search.plan_survey import SurveyStage
from qco_tune.search.plan_tuning import COMPILE_KNOBS, SURVEY_SHARE
from qco_tune.search.space import SearchSpace

__all__ = ["COMPILE_KNOBS", "SURVEY_SHARE", "Done", "Stage", "plan_next", "stage_of"]

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


class _Planner(SurveyStage, CompileStage):
    """One proposal's planning: the stages in order."""

    def next(self, target: int | None) -> TrialConfig | None:
        if self.surveying(target):
            early = self.promising_compile()
            if early is not None:
                return early
            level = self.survey_level()
            if level is not None:
                return level
        return self.compile_variant() or self.refinement()

    # -- stage 3: refine ---------------------------------------------------------------------------------------

    def refinement(self) -> TrialConfig | None:
        for d in front_of(self.done):
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
