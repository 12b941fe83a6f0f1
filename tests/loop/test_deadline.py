"""The run's time limit: a queued trial not expected to finish before it stays queued for the next run.

In-process, an in-memory Optuna study, a FAKE trial runner (no child, no GPU) that advances a fake clock
by the seconds each trial is said to cost.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import optuna
import pytest
from fake_machines import H100_NATIVE_ATTENTION
from loop_fakes import FakeTimedRunner, Messages

from qco_tune.core.config import QuantBackend, TrialConfig
from qco_tune.core.keys import ATTEMPT_ATTR, CONFIG_ATTR, REASON_ATTR, RETRY_OF_ATTR, STATUS_ATTR
from qco_tune.core.modelref import resolve_model
from qco_tune.core.spec import spec_for_model
from qco_tune.loop.context import RunResult, StudyContext
from qco_tune.loop.ledger import ledger
from qco_tune.loop.study import run_loop
from qco_tune.search.pareto import summarize
from qco_tune.search.planner import Done
from qco_tune.search.space import SearchSpace
from qco_tune.search.trial_cost import expected_seconds

NF4: tuple[tuple[str, QuantBackend], ...] = (("transformer", "bnb_nf4"), ("text_encoder_2", "bnb_nf4"))
EAGER = TrialConfig(quantization=NF4)
COMPILED = TrialConfig(quantization=NF4, compile="full")
OFFLOADED = TrialConfig(quantization=NF4, compile="full", offload="model")


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudyContext:
    monkeypatch.setenv("QCO_CACHE", str(tmp_path))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = dataclasses.replace(spec_for_model("flux.1-dev"), trials=None)
    model = resolve_model(spec.model, spec.weights)
    space = SearchSpace.build(spec, model, H100_NATIVE_ATTENTION)
    study = optuna.create_study(directions=["minimize", "minimize"])
    for config in (EAGER, COMPILED):
        study.enqueue_trial(space.params(config))
    return StudyContext(spec, model, H100_NATIVE_ATTENTION, space, study, Messages(), {}, plan=False)


def test_a_queued_trial_that_cannot_finish_before_the_limit_stays_queued(ctx: StudyContext) -> None:
    runner = FakeTimedRunner({"none": 50.0, "full": 200.0})
    ctx = dataclasses.replace(ctx, execute=runner)
    result = RunResult(ctx.spec.name)
    run_loop(ctx, result, deadline=150.0, clock=runner.clock)
    # The eager trial ran (50 s); the compiled one is expected to cost 4 eager trials (200 s) > 100 s left.
    assert runner.ran == [EAGER] and result.stopped == "timeout"
    states = [t.state for t in ctx.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING]  # nothing cut off
    assert isinstance(ctx.observer, Messages)
    (line,) = [m for m in ctx.observer.lines if m.startswith("stopping before the time limit")]
    assert "expected to take 200 s, 100 s are left; it stays queued for the next run" in line


def test_with_time_enough_the_queued_trial_runs(ctx: StudyContext) -> None:
    runner = FakeTimedRunner({"none": 50.0, "full": 200.0})
    ctx = dataclasses.replace(ctx, execute=runner)
    stop = lambda: len(runner.ran) >= 2  # noqa: E731 (what the sampler proposes after the queue is not the point)
    run_loop(ctx, RunResult(ctx.spec.name), deadline=50.0 + 200.0 * 1.2 + 1, clock=runner.clock, should_stop=stop)
    assert runner.ran == [EAGER, COMPILED]


def done(number: int, config: TrialConfig, seconds: float | None) -> Done:
    return Done(number, config, 5.0, 2.0**34, True, seconds)


def test_what_a_trial_is_expected_to_cost() -> None:
    assert expected_seconds(EAGER, []) is None  # nothing measured yet: unknown, so it runs
    history = [done(0, EAGER, 50.0), done(1, EAGER, 70.0), done(2, COMPILED, 180.0), done(3, OFFLOADED, 300.0)]
    assert expected_seconds(TrialConfig(), history) == 60.0  # eager: the median of the eager ones
    assert expected_seconds(COMPILED, history) == 180.0  # alike in compile variant and offloading
    assert expected_seconds(OFFLOADED, history) == 300.0  # offloading trials run slower calls
    # A compile variant not measured yet: a prior multiple of an eager trial (autotuning: 8).
    autotuned = TrialConfig(quantization=NF4, compile="regional", compile_mode="max-autotune")
    assert expected_seconds(autotuned, history[:2]) == pytest.approx(60.0 * 8)


def test_cost_is_learned_by_quantization_and_a_cut_off_run_is_a_floor() -> None:
    fp8 = (("transformer", "torchao_fp8dq"), ("text_encoder_2", "bnb_nf4"))
    fp8_regional = TrialConfig(quantization=fp8, compile="regional")
    nf4_whole = TrialConfig(quantization=NF4, compile="full")
    history = [done(0, EAGER, 55.0), done(1, nf4_whole, 90.0), done(2, fp8_regional, 252.0)]
    # A float8 transformer compiled whole: from its own regional compile, scaled by the priors (4 / 3), not
    # from the NF4 one (studies/results/flux-dev-24gib/: #12 cost 252 s, the whole compile over 387 s).
    fp8_whole = TrialConfig(quantization=fp8, compile="full")
    assert expected_seconds(fp8_whole, history) == pytest.approx(252.0 * 4 / 3)
    assert expected_seconds(nf4_whole, history) == 90.0
    # Cut off after 387 s, it needs more than that, whatever the estimate said.
    assert expected_seconds(fp8_whole, history, floor=387.0) == pytest.approx(387.0 * 1.25)
    assert expected_seconds(nf4_whole, history, floor=10.0) == 90.0


def cut_off(ctx: StudyContext, config: TrialConfig, seconds: float) -> int:
    """Record a run of ``config`` interrupted after ``seconds``, as the loop records one; returns its number."""
    start = datetime.datetime(2026, 12, 1, 15, 32, 17)
    trial = optuna.trial.FrozenTrial(
        number=0,
        state=optuna.trial.TrialState.FAIL,
        value=None,
        datetime_start=start,
        datetime_complete=start + datetime.timedelta(seconds=seconds),
        params={},
        distributions={},
        user_attrs={CONFIG_ATTR: config.to_dict(), STATUS_ATTR: "interrupted", ATTEMPT_ATTR: 1},
        system_attrs={},
        intermediate_values={},
        trial_id=0,
    )
    ctx.study.add_trial(trial)
    return ctx.study.trials[-1].number


def test_a_retry_known_to_outlast_the_time_left_is_put_aside_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QCO_CACHE", str(tmp_path))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = dataclasses.replace(spec_for_model("flux.1-dev"), trials=None)
    model = resolve_model(spec.model, spec.weights)
    space = SearchSpace.build(spec, model, H100_NATIVE_ATTENTION)
    study = optuna.create_study(directions=["minimize", "minimize"])
    ctx = StudyContext(spec, model, H100_NATIVE_ATTENTION, space, study, Messages(), {}, plan=False)
    first = cut_off(ctx, COMPILED, 300.0)
    study.enqueue_trial(space.params(COMPILED), user_attrs={RETRY_OF_ATTR: first, ATTEMPT_ATTR: 2})
    study.enqueue_trial(space.params(EAGER))
    runner = FakeTimedRunner({"none": 50.0, "full": 200.0})
    ctx = dataclasses.replace(ctx, execute=runner)
    stop = lambda: EAGER in runner.ran  # noqa: E731
    # 300 s left: the retry needs at least 300 x 1.25 (it had not finished), so the eager trial runs instead.
    run_loop(ctx, RunResult(spec.name), deadline=300.0, clock=runner.clock, should_stop=stop)
    assert runner.ran == [EAGER]
    deferred = study.trials[1]
    assert deferred.state == optuna.trial.TrialState.FAIL and deferred.user_attrs[STATUS_ATTR] == "deferred"
    assert "cut off after 300 s" in deferred.user_attrs[REASON_ATTR]
    # Queued again when the run ended, as it was: the next run (with more time) starts with it.
    (again,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert TrialConfig.from_params(again.system_attrs["fixed_params"]).key() == COMPILED.key()
    assert again.user_attrs[RETRY_OF_ATTR] == first and again.user_attrs[ATTEMPT_ATTR] == 2
    assert ledger(study).counted == 1  # the eager trial; neither the cut-off run nor the deferral counts
    (row,) = [r for r in summarize(study.trials, ctx.spec.vram_budget).rows if r.number == deferred.number]
    assert row.category == "skipped"  # it never ran: show and list count it with the skipped proposals
    assert isinstance(ctx.observer, Messages)
    assert any("deferred: a run of it was cut off after 300 s" in line for line in ctx.observer.lines)


def test_cost_is_keyed_on_each_components_placement_not_only_the_pipeline_wide_offload() -> None:
    released = TrialConfig(quantization=NF4, compile="full", placement=(("text_encoder_2", "released"),))
    history = [done(0, EAGER, 50.0), done(1, COMPILED, 180.0), done(2, released, 240.0)]
    # Same offload ("none") for both, but T5 moved off on every call: each is its own cost class.
    assert expected_seconds(released, history) == 240.0
    assert expected_seconds(COMPILED, history) == 180.0
    group_denoiser = TrialConfig(quantization=NF4, compile="full", placement=(("transformer", "group_leaf"),))
    # Not priced as all resident: the compile cost of its quantization and variant, over both measured.
    assert expected_seconds(group_denoiser, history) == pytest.approx((180.0 + 240.0) / 2)
