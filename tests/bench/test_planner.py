"""The planner: survey without compiling, then compile what can reach the front, cheapest variant first."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qco_tune import planner
from qco_tune.config import Capabilities, TrialConfig
from qco_tune.grid import grid_spec
from qco_tune.planner import Done, plan_next
from qco_tune.presets import get_preset
from qco_tune.space import SearchSpace

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
    return plan_next(
        space.knobs(),
        space.enumerate(),
        done,
        tried,
        lambda c: True,
        budget_bytes=4 * GIB,
        **kwargs,  # type: ignore[arg-type]
    )


def eager_done(space: SearchSpace, figures: dict[TrialConfig, tuple[float, float]] | None = None) -> list[Done]:
    """Every uncompiled configuration measured: given figures, else slow and 1 GiB over nothing special."""
    figures = figures or {}
    out = []
    for number, config in enumerate(c for c in space.enumerate() if c.compile == "none"):
        latency, memory = figures.get(config, (5.0 + number, 3.9))
        out.append(Done(number, config, latency, memory * GIB, memory <= 4, seconds=20.0))
    return out


def test_nothing_is_staged_where_nothing_compiles(space: SearchSpace) -> None:
    knobs = {**space.knobs(), "compile": ("none",)}
    assert plan_next(knobs, space.enumerate(), [], set(), lambda c: True, budget_bytes=GIB) is None


def test_the_survey_fixes_compile_to_none_and_names_a_new_memory_level_after_skips(space: SearchSpace) -> None:
    assert plan(space, []) == {"compile": "none"}
    first = Done(0, TrialConfig(), 1.0, 3 * GIB, True, 20.0)
    named = plan(space, [first], skips_in_a_row=planner.SKIPS_BEFORE_CONCRETE)
    assert isinstance(named, TrialConfig) and named.compile == "none"
    assert (named.quantization, named.offload) != ((), "none")  # a memory level not seen yet


def test_the_survey_ends_when_the_eager_front_stops_growing(space: SearchSpace) -> None:
    # Six measured, each a new trade-off (slower, smaller): still surveying.
    eager = [c for c in space.enumerate() if c.compile == "none"]
    done = [Done(i, c, 1.0 + i, (2.0 - 0.2 * i) * GIB, True, 20.0) for i, c in enumerate(eager[:6])]
    assert plan(space, done) == {"compile": "none"}
    # Then four that add nothing (slower and larger than the rest): the survey is over.
    done += [Done(6 + i, c, 9.0, 3.0 * GIB, True, 20.0) for i, c in enumerate(eager[6:9])]
    assert plan(space, done) == {"compile": "none"}  # three are not enough
    done.append(Done(9, eager[9], 9.0, 3.0 * GIB, True, 20.0))
    assert plan(space, done) != {"compile": "none"}
    # A trial target ends it at half the target.
    assert plan(space, done[:2], target=4) != {"compile": "none"}


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
    picked = plan_next(space.knobs(), space.enumerate(), done, tried, lambda c: True, budget_bytes=4 * GIB)
    assert picked == dataclasses.replace(regional, compile="full")
    # Dominated by a faster and smaller point, it gets nothing more.
    done.append(Done(len(done), TrialConfig(quantization=FP8, compile="regional"), 0.1, 1.0 * GIB, True, 60.0))
    assert plan_next(space.knobs(), space.enumerate(), done, tried, lambda c: True, budget_bytes=4 * GIB) is None


def test_what_the_caller_cannot_run_is_never_planned(space: SearchSpace) -> None:
    done = eager_done(space, {TrialConfig(quantization=NF4): (0.5, 3.0)})
    tried = {d.config.key() for d in done}
    picked = plan_next(
        space.knobs(), space.enumerate(), done, tried, lambda c: c.compile != "regional", budget_bytes=4 * GIB
    )
    assert isinstance(picked, TrialConfig) and picked.compile == "full"


def test_the_headline_study_is_staged_too() -> None:
    """FLUX.1-dev's 16 GiB spec has ~18,000 configurations on an H100: the loop still surveys uncompiled first.

    The trial runner is a FAKE (no pipeline runs): memory is the memory model's prediction, latency a
    made-up figure that compiling lowers. Only the order of proposals is checked.
    """
    import optuna

    from qco_tune import memory
    from qco_tune.config import Measurement, TrialRequest
    from qco_tune.spec import load_spec
    from qco_tune.study import PLAN_MAX_CONFIGS, RunResult, SilentObserver, _Context, open_study, run_loop

    spec = dataclasses.replace(
        load_spec(Path(__file__).resolve().parents[2] / "studies" / "flux-dev-16gib.toml"), trials=12, timeout=None
    )
    model = get_preset(spec.model).model_info()
    caps = dataclasses.replace(H100, backends=("bitsandbytes", "torchao", "quanto"), total_memory=80 * GIB)
    space = SearchSpace.build(spec, model, caps)
    assert 5_000 < sum(1 for _ in space.iter_configs()) <= PLAN_MAX_CONFIGS

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
    ctx = _Context(spec, model, caps, space, study, SilentObserver(), {}, execute=fake_execute)
    run_loop(ctx, RunResult(spec.name), should_stop=lambda: False)
    searched = [t for t in study.get_trials() if "qco.baseline" not in t.user_attrs and "qco.config" in t.user_attrs]
    searched = [t for t in searched if t.state.name == "COMPLETE"]
    assert len(searched) >= 4
    assert all(t.user_attrs["qco.config"]["compile"] == "none" for t in searched[:4]), [
        t.user_attrs["qco.config"]["compile"] for t in searched
    ]
