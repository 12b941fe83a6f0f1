"""The run's time limit: a queued trial not expected to finish before it stays queued for the next run.

In-process, an in-memory Optuna study, a FAKE trial runner (no child, no GPU) that advances a fake clock
by the seconds each trial is said to cost.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
from loop_fakes import H100, FakeTimedRunner, Messages

from qco_tune.core.config import QuantBackend, TrialConfig
from qco_tune.core.modelref import resolve_model
from qco_tune.core.spec import spec_for_model
from qco_tune.loop.context import RunResult, _Context
from qco_tune.loop.study import run_loop
from qco_tune.search.planner import Done
from qco_tune.search.space import SearchSpace
from qco_tune.search.trial_cost import expected_seconds

NF4: tuple[tuple[str, QuantBackend], ...] = (("transformer", "bnb_nf4"), ("text_encoder_2", "bnb_nf4"))
EAGER = TrialConfig(quantization=NF4)
COMPILED = TrialConfig(quantization=NF4, compile="full")
OFFLOADED = TrialConfig(quantization=NF4, compile="full", offload="model")


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Context:
    monkeypatch.setenv("QCO_CACHE", str(tmp_path))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = dataclasses.replace(spec_for_model("flux.1-dev"), trials=None)
    model = resolve_model(spec.model, spec.weights)
    space = SearchSpace.build(spec, model, H100)
    study = optuna.create_study(directions=["minimize", "minimize"])
    for config in (EAGER, COMPILED):
        study.enqueue_trial(space.params(config))
    return _Context(spec, model, H100, space, study, Messages(), {}, plan=False)


def test_a_queued_trial_that_cannot_finish_before_the_limit_stays_queued(ctx: _Context) -> None:
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


def test_with_time_enough_the_queued_trial_runs(ctx: _Context) -> None:
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
