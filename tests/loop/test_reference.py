"""The study's fidelity reference: how its trial is requested, the PSNR constraint, and the offload fallback.

In-process, with an in-memory Optuna study and no trial children.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import optuna
import pytest
from fake_machines import H100_NATIVE_ATTENTION
from loop_fakes import FakeRunner, Messages

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import BASELINE_ATTR
from qco_tune.core.modelref import resolve_model
from qco_tune.core.records import Measurement
from qco_tune.core.spec import spec_for_model
from qco_tune.loop.context import OFFLOAD_REFERENCE, RunResult, SilentObserver, StudyContext
from qco_tune.loop.ledger import ledger
from qco_tune.loop.setup import reference_dir
from qco_tune.loop.study import run_loop
from qco_tune.loop.trial import enqueue_offload_reference, tell_measurement, trial_request
from qco_tune.search.space import SearchSpace


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudyContext:
    monkeypatch.setenv("QCO_CACHE", str(tmp_path))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = dataclasses.replace(spec_for_model("flux.1-dev"), min_psnr=30.0)
    model = resolve_model(spec.model, spec.weights)
    space = SearchSpace.build(spec, model, H100_NATIVE_ATTENTION)
    study = optuna.create_study(directions=["minimize", "minimize"])
    return StudyContext(spec, model, H100_NATIVE_ATTENTION, space, study, SilentObserver(), {})


def test_the_reference_runs_uncapped_and_saves_the_output(ctx: StudyContext, tmp_path: Path) -> None:
    reference = trial_request(ctx, TrialConfig(), 0, "reference")
    assert reference.save_reference and reference.memory_limit is None
    assert reference.reference_dir == str(reference_dir(ctx.spec))
    assert Path(reference.reference_dir).parent == tmp_path / "references"
    searched = trial_request(ctx, TrialConfig(compile="regional"), 5, None)
    assert not searched.save_reference and searched.memory_limit == ctx.spec.vram_budget
    assert searched.reference_dir == reference.reference_dir
    # Another workload is another reference.
    other = dataclasses.replace(ctx, spec=dataclasses.replace(ctx.spec, workload=ctx.spec.workload.__class__()))
    assert reference_dir(other.spec) != reference_dir(ctx.spec)


@pytest.mark.parametrize(
    ("psnr", "feasible", "constraint"),
    [(34.5, True, -4.5), (25.0, False, 5.0), (math.inf, True, -970.0), (None, True, None)],
)
def test_min_psnr_is_a_second_constraint(
    ctx: StudyContext, psnr: float | None, feasible: bool, constraint: float | None
) -> None:
    trial = ctx.study.ask()
    m = Measurement(status="ok", device="cuda", latency_s=5.0, peak_device_bytes=2**30, psnr_db=psnr)
    assert tell_measurement(ctx, trial, m) is feasible
    constraints = ctx.study.trials[-1].system_attrs
    assert constraints.get("constraints:psnr") == constraint
    assert constraints["constraints:vram"] < 0


def test_a_reference_that_does_not_fit_is_measured_again_with_model_offload(ctx: StudyContext) -> None:
    enqueue_offload_reference(ctx)
    (waiting,) = ctx.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting.user_attrs[BASELINE_ATTR] == OFFLOAD_REFERENCE
    params = waiting.system_attrs["fixed_params"]  # what the next ask() of the study will suggest
    assert params["offload"] == "model" and params["compile"] == "none"
    assert trial_request(ctx, TrialConfig(offload="model"), 1, OFFLOAD_REFERENCE).save_reference


def _study_with_reference(ctx: StudyContext, runner: FakeRunner, trials: int) -> StudyContext:
    ctx.study.enqueue_trial(ctx.space.params(TrialConfig()), user_attrs={BASELINE_ATTR: "reference"})
    return dataclasses.replace(ctx, spec=dataclasses.replace(ctx.spec, trials=trials), execute=runner, plan=False)


def test_the_reference_runs_over_the_budget_and_is_no_trial_of_the_target(ctx: StudyContext) -> None:
    runner = FakeRunner()
    ctx = _study_with_reference(ctx, runner, trials=1)
    result = RunResult(ctx.spec.name)
    run_loop(ctx, result)
    # bf16 FLUX.1-dev is predicted far over the 16 GiB budget, yet the reference ran, uncapped...
    first = runner.requests[0]
    assert first.save_reference and first.memory_limit is None and first.config == TrialConfig()
    assert ctx.study.trials[0].state == optuna.trial.TrialState.COMPLETE
    # ... and the one trial of the target is a searched one, run besides it.
    searched = [r for r in runner.requests if not r.save_reference]
    assert result.stopped == "trials" and len(searched) == 1 and searched[0].memory_limit == ctx.spec.vram_budget
    assert ledger(ctx.study).counted == 1


def test_a_reference_beyond_the_gpu_is_measured_with_model_offload_straight_away(ctx: StudyContext) -> None:
    small = dataclasses.replace(H100_NATIVE_ATTENTION, gpu_name="a 24 GiB GPU", total_memory=24 * 2**30)
    runner = FakeRunner()
    ctx = _study_with_reference(dataclasses.replace(ctx, caps=small), runner, trials=0)
    ctx = dataclasses.replace(ctx, spec=dataclasses.replace(ctx.spec, trials=None))
    result = RunResult(ctx.spec.name)
    run_loop(ctx, result, should_stop=lambda: len(runner.requests) >= 1)
    skipped = ctx.study.trials[0]
    assert skipped.state == optuna.trial.TrialState.PRUNED
    assert "the reference cannot run here: predicted 37.3 GiB" in skipped.user_attrs["qco.reason"]
    assert "over this GPU's 24.0 GiB" in skipped.user_attrs["qco.reason"]
    (offloaded,) = runner.requests  # no GPU time went to the reference that could not fit
    assert offloaded.config == TrialConfig(offload="model") and offloaded.save_reference
    assert ctx.study.trials[1].user_attrs[BASELINE_ATTR] == OFFLOAD_REFERENCE


def _resumed_on_a_fresh_machine(ctx: StudyContext, runner: FakeRunner) -> StudyContext:
    """A study whose reference finished elsewhere: its output is in no reference folder here."""
    first = _study_with_reference(ctx, runner, trials=1)
    run_loop(first, RunResult(ctx.spec.name))
    runner.requests.clear()
    observer = Messages()
    return dataclasses.replace(first, spec=dataclasses.replace(first.spec, trials=2), observer=observer)


def test_a_resumed_study_measures_the_reference_again_where_its_output_is_missing(ctx: StudyContext) -> None:
    runner = FakeRunner()
    resumed = _resumed_on_a_fresh_machine(ctx, runner)
    resumed.restore_reference = True
    complete = (optuna.trial.TrialState.COMPLETE,)
    before = len(ctx.study.get_trials(states=complete))
    run_loop(resumed, RunResult(ctx.spec.name))
    # The reference's configuration ran first, uncapped, saving its output ...
    again = runner.requests[0]
    assert again.config == TrialConfig() and again.save_reference and again.memory_limit is None
    assert again.trial_number == 0 and again.reference_dir == str(reference_dir(ctx.spec))
    # ... as measurement, not as a trial: one searched trial was added, and only once was it checked.
    assert [r.save_reference for r in runner.requests] == [True, False]
    assert len(ctx.study.get_trials(states=complete)) == before + 1 and not resumed.restore_reference
    assert any("not on this machine" in line for line in resumed.observer.lines)  # type: ignore[attr-defined]


def test_no_reference_is_measured_again_where_its_output_is_here_or_it_never_finished(ctx: StudyContext) -> None:
    from qco_tune.measure.backends.fidelity import save_reference

    runner = FakeRunner()
    resumed = _resumed_on_a_fresh_machine(ctx, runner)
    save_reference(reference_dir(ctx.spec), [[0.5]], None, {"trial": 0})
    resumed.restore_reference = True
    run_loop(resumed, RunResult(ctx.spec.name))
    assert [r.save_reference for r in runner.requests] == [False]
    # A new study: its reference is a queued trial, run as such (once).
    fresh = FakeRunner()
    other = _study_with_reference(
        dataclasses.replace(ctx, study=optuna.create_study(directions=["minimize", "minimize"])), fresh, trials=1
    )
    other.restore_reference = True
    run_loop(other, RunResult(ctx.spec.name))
    assert [r.save_reference for r in fresh.requests] == [True, False]
