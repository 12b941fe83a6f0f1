"""The planner: survey the memory levels uncompiled, then compile what can reach the front, cheapest variant first.

The staging on spaces of a million configurations and the order of the stages: ``test_planner_scale.py``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qco_tune.bench.grid import grid_spec
from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import Capabilities
from qco_tune.search import plan_survey, planner
from qco_tune.search.planner import Done, plan_next, stage_of
from qco_tune.search.space import SearchSpace

GIB = 2**30
H100 = Capabilities(
    cuda=True, gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0), backends=("bitsandbytes", "torchao")
)
NF4 = (("transformer", "bnb_nf4"),)
FP8 = (("transformer", "torchao_fp8dq"),)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.build(grid_spec(), get_preset("flux.1-dev-reduced").model_info(), H100)


def plan(space: SearchSpace, done: list[Done], **kwargs: object) -> object:
    tried = {d.config.key() for d in done}
    return plan_next(space, done, tried, lambda c: True, budget_bytes=4 * GIB, **kwargs)  # type: ignore[arg-type]


def eager_done(space: SearchSpace, figures: dict[TrialConfig, tuple[float, float]] | None = None) -> list[Done]:
    """Every uncompiled configuration measured: given figures, else slow and 1 GiB over nothing special."""
    figures = figures or {}
    out = []
    for number, config in enumerate(c for c in space.enumerate() if c.compile == "none"):
        latency, memory = figures.get(config, (5.0 + number, 3.9))
        out.append(Done(number, config, latency, memory * GIB, memory <= 4, seconds=20.0))
    return out


def test_where_nothing_compiles_the_levels_are_still_surveyed_and_nothing_compiled(space: SearchSpace) -> None:
    # The staging holds without a compile stage: the survey and the refinements still plan.
    spec = grid_spec()
    spec = dataclasses.replace(spec, space=dataclasses.replace(spec.space, compile=("none",)))
    eager_only = SearchSpace.build(spec, get_preset("flux.1-dev-reduced").model_info(), H100)
    first = plan_next(eager_only, [], set(), lambda c: True, budget_bytes=GIB)
    assert isinstance(first, TrialConfig) and first.compile == "none"
    done = eager_done(eager_only)
    tried = {d.config.key() for d in done}
    assert plan_next(eager_only, done, tried, lambda c: True, budget_bytes=4 * GIB) is None


def level(backend: str, offload: str = "none") -> TrialConfig:
    quant = (("transformer", backend),) if backend != "none" else ()
    return SearchSpace.config_from(dict(quant), offload=offload, use_stream=True, non_blocking=True)


def test_the_survey_names_an_uncompiled_memory_level_of_a_family_not_seen_yet(space: SearchSpace) -> None:
    first = plan(space, [])
    assert isinstance(first, TrialConfig) and first.compile == "none" and first.settings() == {}
    # Resident first (offloading is slower at the same quantization), and the backend that is fastest compiled.
    assert first.offload == "none" and first.quantization == FP8
    seen = Done(0, first, 1.0, 3 * GIB, True, 20.0)
    second = plan(space, [seen])
    assert isinstance(second, TrialConfig) and second.compile == "none"
    assert (second.quantization, second.offload) != (first.quantization, first.offload)


def test_the_survey_ends_when_the_reachable_front_stops_growing(
    space: SearchSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_survey, "PROMISE", float("inf"))  # no level compiled early (tested below)
    # Two measured, each a new trade-off (slower, smaller): still surveying.
    levels = [level(b, o) for o in ("none", "model", "group_leaf") for b in ("torchao_fp8dq", "bnb_nf4", "none")]
    done = [Done(i, c, 1.0 + i, (2.0 - 0.2 * i) * GIB, True, 20.0) for i, c in enumerate(levels[:2])]
    assert stage_of(space, plan(space, done)) == "survey"  # type: ignore[arg-type]
    # Then two that add nothing (slower and larger than the rest): the survey is over.
    done.append(Done(2, levels[2], 9.0, 3.0 * GIB, True, 20.0))
    assert stage_of(space, plan(space, done)) == "survey"  # type: ignore[arg-type]  # one is not enough
    done.append(Done(3, levels[3], 9.0, 3.0 * GIB, True, 20.0))
    assert stage_of(space, plan(space, done)) == "compile"  # type: ignore[arg-type]
    # A trial target ends it at a quarter of the target.
    assert stage_of(space, plan(space, done[:1], target=4)) == "compile"  # type: ignore[arg-type]
    # Seeded baselines do not count as survey trials.
    seeded = [dataclasses.replace(d, seeded=True) for d in done]
    assert stage_of(space, plan(space, seeded, target=4)) == "survey"  # type: ignore[arg-type]


def test_a_level_that_promises_the_front_s_best_is_compiled_before_the_survey_goes_on(space: SearchSpace) -> None:
    recipe = Done(0, TrialConfig(quantization=NF4, compile="full"), 4.2, 3.0 * GIB, True, 200.0, seeded=True)
    fp8 = level("torchao_fp8dq", "none")
    # The float8 level, slow eager (9.9 s), hopes for 9.9 / 3.26 = 3.0 s compiled: 1.4x the recipe's 4.2 s.
    done = [recipe, Done(1, fp8, 9.9, 3.5 * GIB, True, 60.0)]
    picked = plan(space, done)
    assert isinstance(picked, TrialConfig) and picked.quantization == fp8.quantization
    assert (picked.compile, picked.compile_mode, picked.fullgraph) == ("regional", "default", False)
    assert stage_of(space, picked) == "compile"
    # Once compiled, the survey goes on with the next level (the early compile does not end it) ...
    done.append(Done(2, picked, 3.1, 3.5 * GIB, True, 200.0))
    after = plan(space, done)
    assert isinstance(after, TrialConfig) and stage_of(space, after) == "survey" and after.quantization != FP8
    # ... and a level that only hopes for what the recipe has gets no early compile.
    slow = [recipe, Done(1, fp8, 15.0, 3.5 * GIB, True, 60.0)]  # 15.0 / 3.26 = 4.6 s: no better than 4.2 s
    assert stage_of(space, plan(space, slow)) == "survey"  # type: ignore[arg-type]
    # Nothing to beat yet (no other feasible trial): no early compile either.
    assert stage_of(space, plan(space, done[1:2])) == "survey"  # type: ignore[arg-type]


def test_after_the_survey_the_front_is_compiled_cheapest_variant_first(space: SearchSpace) -> None:
    fast = TrialConfig(quantization=NF4)
    done = eager_done(space, {fast: (0.5, 3.0), TrialConfig(quantization=NF4, offload="model"): (1.0, 1.5)})
    picked = plan(space, done)
    assert isinstance(picked, TrialConfig)
    assert (picked.compile, picked.compile_mode, picked.fullgraph) == ("regional", "default", False)
    assert dataclasses.replace(picked, compile="none").key() in {
        fast.key(),
        TrialConfig(quantization=NF4, offload="model").key(),
    }


def test_an_eager_configuration_just_over_budget_may_still_be_compiled(space: SearchSpace) -> None:
    over = TrialConfig(quantization=FP8)
    done = eager_done(space, {over: (0.3, 4.2)})  # 5 % over a 4 GiB budget, by far the fastest
    picked = plan(space, done)
    assert isinstance(picked, TrialConfig) and picked.quantization == FP8 and picked.offload == "none"


def test_a_compiled_front_configuration_gets_its_next_variant_and_a_dominated_one_none(space: SearchSpace) -> None:
    base = TrialConfig(quantization=NF4)
    regional = dataclasses.replace(base, compile="regional")
    done = eager_done(space, {base: (1.0, 2.0)})
    others = [c for c in space.enumerate() if c.compile != "none" and c.key() != regional.key()]
    tried_all_but = {c.key() for c in others}
    done.append(Done(len(done), regional, 0.4, 2.0 * GIB, True, 60.0))
    tried = {d.config.key() for d in done} | (tried_all_but - {dataclasses.replace(regional, compile="full").key()})
    picked = plan_next(space, done, tried, lambda c: True, budget_bytes=4 * GIB)
    assert picked == dataclasses.replace(regional, compile="full")
    # Dominated by a faster and smaller point, it gets nothing more.
    done.append(Done(len(done), TrialConfig(quantization=FP8, compile="regional"), 0.1, 1.0 * GIB, True, 60.0))
    assert plan_next(space, done, tried, lambda c: True, budget_bytes=4 * GIB) is None


def test_what_the_caller_cannot_run_is_never_planned(space: SearchSpace) -> None:
    done = eager_done(space, {TrialConfig(quantization=NF4): (0.5, 3.0)})
    tried = {d.config.key() for d in done}
    picked = plan_next(space, done, tried, lambda c: c.compile != "regional", budget_bytes=4 * GIB)
    assert isinstance(picked, TrialConfig) and picked.compile == "full"


def test_the_headline_study_is_staged_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLUX.1-dev's 16 GiB spec (~18,000 configurations on an H100) through the loop: uncompiled levels first.

    The trial runner is a FAKE (no pipeline runs): memory is the memory model's prediction, latency a
    made-up figure that compiling halves. Only the order of proposals is checked. Every level's eager latency
    is the same, so the float8 prior would make each compile early: that rule is switched off here.
    """
    monkeypatch.setattr(plan_survey, "PROMISE", float("inf"))
    import optuna

    from qco_tune.core.records import Measurement, TrialRequest
    from qco_tune.core.spec import load_spec
    from qco_tune.loop.context import RunResult, SilentObserver, StudyContext
    from qco_tune.loop.setup import open_study
    from qco_tune.loop.study import run_loop
    from qco_tune.search import memory

    spec = dataclasses.replace(
        load_spec(Path(__file__).resolve().parents[2] / "studies" / "flux-dev-16gib.toml"), trials=12, timeout=None
    )
    model = get_preset(spec.model).model_info()
    caps = dataclasses.replace(H100, backends=("bitsandbytes", "torchao", "quanto"), total_memory=80 * GIB)
    space = SearchSpace.build(spec, model, caps)
    assert sum(1 for _ in space.iter_configs()) > 5_000

    def fake_execute(request: TrialRequest, timeout: float = 0.0, on_phase: object = None) -> Measurement:
        need = memory.predict(model, request.config, spec, caps).device_bytes
        latency = 6.0 / (2.0 if request.config.compile != "none" else 1.0)
        return Measurement(
            status="ok",
            device="cuda",
            latency_s=latency,
            step_time_s=latency / 30,
            first_call_s=latency * 3,
            peak_device_bytes=need,
            extra={"wall_s": 60.0},
        )

    study, _ = open_study(spec, optuna.storages.InMemoryStorage(), model, caps, space, seed=0)
    ctx = StudyContext(spec, model, caps, space, study, SilentObserver(), {}, execute=fake_execute)
    run_loop(ctx, RunResult(spec.name), should_stop=lambda: False)
    searched = [t for t in study.get_trials() if "qco.baseline" not in t.user_attrs and "qco.config" in t.user_attrs]
    searched = [t for t in searched if t.state.name == "COMPLETE"]
    # The survey takes its share of the 12-trial target (it is cut short for expensive full-size trials),
    # then the compile stage begins.
    survey = max(1, round(12 * planner.SURVEY_SHARE))
    kinds = [t.user_attrs["qco.config"]["compile"] for t in searched]
    assert len(kinds) > survey and set(kinds[:survey]) == {"none"} and kinds[survey] != "none", kinds


def test_the_fastest_fitting_configuration_is_compiled_further_first_mode_before_scope(space: SearchSpace) -> None:
    # As on the H200 (studies/results/flux-dev-24gib/, trials #3 and #12): a float8 transformer compiled
    # regionally is the fastest that fits; an NF4 one compiled with model offload the smallest. Compiling the
    # small one further would add more hypervolume per second, but the fastest fitting one is what a user
    # runs: its next variant comes first, and the cheaper knob (the mode) before the scope.
    fp8 = TrialConfig(quantization=FP8)
    small = TrialConfig(quantization=NF4, offload="model")
    done = eager_done(space, {fp8: (1.2, 3.5), small: (2.0, 1.5)})
    n = len(done)
    fp8_regional = dataclasses.replace(fp8, compile="regional")
    small_regional = dataclasses.replace(small, compile="regional")
    done += [
        Done(n, fp8_regional, 0.34, 3.4 * GIB, True, 250.0),
        Done(n + 1, small_regional, 0.9, 1.1 * GIB, True, 120.0),
    ]
    picked = plan(space, done)
    assert picked == dataclasses.replace(fp8_regional, compile_mode="max-autotune-no-cudagraphs")
