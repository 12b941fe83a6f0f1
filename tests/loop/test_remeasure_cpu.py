"""Trials measured with fewer steps, extrapolated, and the final front measured again at the full step count.

The real loop on the CPU with the tiny preset: real runner, child processes and SQLite (a minute or two).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from qco_tune.core.keys import REMEASURE_OF_ATTR
from qco_tune.core.records import Capabilities, Measurement
from qco_tune.core.spec import apply_overrides, load_default_spec
from qco_tune.loop.setup import load_summary
from qco_tune.loop.study import run_study
from qco_tune.search.steps import extrapolation_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cpu_caps() -> Capabilities:
    from qco_tune.measure.runner import probe_capabilities

    caps = probe_capabilities()
    if caps.cuda:
        pytest.skip("this test exercises the CPU path")
    return caps


def test_the_final_front_is_measured_again_at_the_full_step_count(tmp_path: Path, cpu_caps: Capabilities) -> None:
    spec = apply_overrides(
        load_default_spec(),
        name="steps",
        steps=4,
        measure_steps=2,
        trials=2,  # and the reference besides: 3 run
        timed_calls=2,
        max_timed_calls=2,
        warmup_calls=0,
    )
    url = f"sqlite:///{tmp_path / 'qco.db'}"
    result = run_study(spec, storage_url=url, caps=cpu_caps)
    assert result.ran == 3 and result.stopped == "trials"
    study = optuna.load_study(study_name="steps", storage=url)
    trials = {t.number: t for t in study.get_trials()}
    searched = [t for t in trials.values() if REMEASURE_OF_ATTR not in t.user_attrs and t.state == TrialState.COMPLETE]
    assert searched
    for trial in searched:
        m = Measurement.from_dict(trial.user_attrs["qco.measurement"])
        note = extrapolation_of(m)
        assert note is not None and note["measured_steps"] == 2 and note["steps"] == 4
        assert m.extra["steps"] == 2  # the child really ran two steps
        assert m.latency_s == pytest.approx(note["measured_latency_s"] + 2 * note["step_time_s"])
        assert trial.values[0] == pytest.approx(m.latency_s)
    # Every trial of the front, and the reference (first, for fidelity), was measured again at 4 steps.
    assert result.remeasured
    again = {t.user_attrs[REMEASURE_OF_ATTR]: t for t in trials.values() if REMEASURE_OF_ATTR in t.user_attrs}
    assert [a for a, _ in result.remeasured] == [n for n in again]
    assert result.remeasured[0][0] == 0 and trials[0].user_attrs.get("qco.baseline") == "reference"
    for original, trial in again.items():
        assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("qco.reason")
        m = Measurement.from_dict(trial.user_attrs["qco.measurement"])
        assert extrapolation_of(m) is None and m.extra["steps"] == 4
        assert trial.params == trials[original].params
        assert trial.user_attrs.get("qco.baseline") == trials[original].user_attrs.get("qco.baseline")
    reference = again[0]
    assert Measurement.from_dict(reference.user_attrs["qco.measurement"]).psnr_db == float("inf")
    # The summary: extrapolated trials that were measured again are superseded; the front is authoritative.
    summary = load_summary(study)
    assert summary.front and all(extrapolation_of(r.measurement) is None for r in summary.front)
    for original in again:
        assert summary.row(original).category == "superseded"  # type: ignore[union-attr]
    assert summary.baselines["reference"].number == reference.number
    # Re-measured trials do not count towards the target: a second run finds nothing left to do.
    second = run_study(spec, storage_url=url, caps=cpu_caps)
    assert second.ran == 0 and second.remeasured == [] and second.stopped == "trials"
