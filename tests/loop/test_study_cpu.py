"""The tuning loop end to end on the CPU: real runner, real child processes, real SQLite.

Each trial is a fresh Python process that imports torch and diffusers, so these tests take minutes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from qco_tune.core.paths import trial_dir_prefix
from qco_tune.core.records import Capabilities
from qco_tune.core.spec import apply_overrides, load_default_spec
from qco_tune.loop.context import FAULTS_ENV, StudyError
from qco_tune.loop.study import run_study

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cpu_caps() -> Capabilities:
    from qco_tune.measure.runner import probe_capabilities

    caps = probe_capabilities()
    if caps.cuda:
        pytest.skip("these tests exercise the CPU path")
    return caps


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'qco.db'}"


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def test_tiny_study_records_trials_baselines_and_front(tmp_path: Path, cpu_caps: Capabilities) -> None:
    spec = apply_overrides(load_default_spec(), trials=3, name="tiny-four")
    result = run_study(spec, storage_url=_url(tmp_path), caps=cpu_caps)
    # The reference is measurement, not a candidate: it runs besides the 3 trials of the target.
    assert result.ran == 4 and result.stopped == "trials"
    trials = _trials(_url(tmp_path), "tiny-four")
    ran = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    assert len(ran) == 4
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, [t.user_attrs.get("qco.reason") for t in trials]
    for trial in complete:
        latency, memory_gib = trial.values
        assert latency > 0 and memory_gib > 0
        m = trial.user_attrs["qco.measurement"]
        assert m["status"] == "ok" and len(m["latencies_s"]) >= spec.timed_calls
        assert m["step_time_s"] > 0 and m["first_call_s"] > 0 and m["load_s"] > 0
    # The guide's recipes come first, named; the unoptimised reference is trial 0.
    assert trials[0].user_attrs.get("qco.baseline") == "reference"
    # It defines the fidelity reference: identical to itself, and every later trial is measured against it.
    psnr = {t.number: t.user_attrs["qco.measurement"]["psnr_db"] for t in complete}
    assert psnr.pop(0) == float("inf") and psnr and all(0 < p < float("inf") for p in psnr.values()), psnr
    assert result.summary is not None and result.summary.best is not None
    # The database is Optuna's own: its CLI reads it unchanged.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from optuna.cli import main; sys.exit(main())",
            "studies",
            "--storage",
            _url(tmp_path),
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)[0]["name"] == "tiny-four"


def test_abort_and_hang_are_recorded_and_the_study_goes_on(
    tmp_path: Path, cpu_caps: Capabilities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "0:abort,1:hang")
    # The limit must outlast a tiny trial on a loaded 2-core machine (its child imports torch and diffusers).
    spec = apply_overrides(load_default_spec(), trials=2, trial_timeout="90s", name="faults")
    result = run_study(spec, storage_url=_url(tmp_path), caps=cpu_caps)
    assert result.ran == 3  # the reference (trial 0, aborted) and the 2 trials of the target
    trials = {t.number: t for t in _trials(_url(tmp_path), "faults")}
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["qco.status"] == "crash" and "SIGABRT" in trials[0].user_attrs["qco.reason"]
    assert trials[1].state == TrialState.FAIL
    assert trials[1].user_attrs["qco.status"] == "timeout" and "hang" in trials[1].user_attrs["qco.reason"]
    # The third trial that ran (proposals skipped before running have numbers too) finished.
    ran = [t for _, t in sorted(trials.items()) if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    assert len(ran) == 3 and ran[2].state == TrialState.COMPLETE


def _cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, sigint_ignored: bool = False
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qco_tune", "run", "--storage", _url(tmp_path), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)},
        preexec_fn=_ignore_sigint if sigint_ignored else None,
    )


def _ignore_sigint() -> None:
    """Before exec: SIGINT ignored, as a non-interactive shell leaves it for a job started with ``&``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _trial_children(pid: int) -> list[int]:
    """The live trial processes of ``qco-tune run`` process ``pid`` (their request lies in its trial folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and trial_dir_prefix(pid).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass  # gone meanwhile
    return found


def _wait_for(predicate, timeout: float = 240.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except KeyError:
            pass  # the study does not exist yet
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def _states(url: str, name: str) -> list[TrialState]:
    return [t.state for t in _trials(url, name)]


def test_sigkill_of_the_parent_loses_nothing_and_recovers_the_stale_trial(tmp_path: Path) -> None:
    url, name = _url(tmp_path), "killed"
    proc = _cli(tmp_path, "--trials", "5", "--study", name)
    # Kill while a trial runs, after at least one has finished.
    _wait_for(lambda: _states(url, name).count(TrialState.COMPLETE) >= 1 and TrialState.RUNNING in _states(url, name))
    finished_before = {t.number: t.values for t in _trials(url, name) if t.state == TrialState.COMPLETE}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert TrialState.RUNNING in _states(url, name)
    left_behind = list(Path(tempfile.gettempdir()).glob(trial_dir_prefix(proc.pid) + "*"))
    assert left_behind  # the running trial's temporary folder, which the killed process could not remove
    done = [
        t
        for t in _trials(url, name)
        if t.state in (TrialState.COMPLETE, TrialState.FAIL) and t.user_attrs.get("qco.baseline") != "reference"
    ]

    rerun = _cli(tmp_path, "--trials", "3", "--study", name)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    # The header counts what finished, not the abandoned trial; its folder goes with its recovery.
    assert f"{len(done)} of 3 trials done" in " ".join(out.split()), out  # (the console wraps long lines)
    assert not any(folder.exists() for folder in left_behind)
    trials = _trials(url, name)
    assert TrialState.RUNNING not in [t.state for t in trials]
    for number, values in finished_before.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
    recovered = [t for t in trials if t.user_attrs.get("qco.reason", "").startswith("interrupted: owner process")]
    assert len(recovered) == 1 and recovered[0].state == TrialState.FAIL


def test_ctrl_c_records_the_trial_as_interrupted_and_the_study_resumes(tmp_path: Path) -> None:
    url, name = _url(tmp_path), "interrupted"
    proc = _cli(tmp_path, "--trials", "2", "--study", name)
    _wait_for(lambda: TrialState.RUNNING in _states(url, name))
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    trials = _trials(url, name)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["qco.status"] == "interrupted"
    assert TrialState.RUNNING not in [t.state for t in trials]

    rerun = _cli(tmp_path, "--trials", "2", "--study", name)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert _states(url, name).count(TrialState.COMPLETE) >= 1


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["kill-INT", "kill-TERM"])
def test_a_run_started_with_sigint_ignored_stops_on_a_signal_and_resumes(tmp_path: Path, stop: int) -> None:
    url, name = _url(tmp_path), "backgrounded"
    slow = ("--trial-timeout", "10m")  # a trial's limit that no load on the machine reaches
    proc = _cli(tmp_path, "--trials", "1", "--study", name, *slow, sigint_ignored=True)
    _wait_for(lambda: TrialState.RUNNING in _states(url, name) and _trial_children(proc.pid))
    proc.send_signal(stop)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "interrupted" in out
    assert not _trial_children(proc.pid)  # the trial's child was stopped with it
    assert not list(Path(tempfile.gettempdir()).glob(trial_dir_prefix(proc.pid) + "*"))
    trials = _trials(url, name)
    assert TrialState.RUNNING not in [t.state for t in trials]
    interrupted = [t for t in trials if t.user_attrs.get("qco.status") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    queued = [t for t in trials if t.user_attrs.get("qco.retry_of") == interrupted[0].number]
    assert len(queued) == 1 and queued[0].state == TrialState.WAITING
    assert queued[0].system_attrs["fixed_params"] == interrupted[0].params  # its configuration comes back
    complete_before = _states(url, name).count(TrialState.COMPLETE)

    rerun = _cli(tmp_path, "--trials", "1", "--study", name, *slow, sigint_ignored=True)
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out
    reasons = [t.user_attrs.get("qco.reason") for t in _trials(url, name)]
    assert _states(url, name).count(TrialState.COMPLETE) > complete_before, reasons


def test_changed_spec_is_refused_unless_asked(tmp_path: Path, cpu_caps: Capabilities) -> None:
    spec = apply_overrides(load_default_spec(), trials=1, name="same-name")
    run_study(spec, storage_url=_url(tmp_path), caps=cpu_caps)
    changed = dataclasses.replace(spec, workload=dataclasses.replace(spec.workload, steps=spec.workload.steps + 1))
    with pytest.raises(StudyError, match="different spec"):
        run_study(changed, storage_url=_url(tmp_path), caps=cpu_caps)
    again = run_study(changed, storage_url=_url(tmp_path), caps=cpu_caps, allow_changed_spec=True)
    assert again.stopped == "trials" and again.ran == 0


def test_a_study_resumed_without_its_reference_output_measures_it_again_and_keeps_fidelity(
    tmp_path: Path, cpu_caps: Capabilities, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("QCO_CACHE", str(tmp_path / "cache"))  # the folder this test empties is its own

    from loop_fakes import Messages

    from qco_tune.loop.setup import reference_dir, trial_workload

    spec = apply_overrides(load_default_spec(), trials=1, name="tiny-moved")
    run_study(spec, storage_url=_url(tmp_path), caps=cpu_caps)
    # A fresh machine: the storage came along, the reference output (in the machine's cache) did not.
    shutil.rmtree(reference_dir(spec, trial_workload(spec)))
    more = apply_overrides(spec, trials=2)
    observer = Messages()
    result = run_study(more, storage_url=_url(tmp_path), caps=cpu_caps, observer=observer, allow_changed_spec=True)
    assert result.ran == 1 and any("not on this machine" in line for line in observer.lines), observer.lines
    complete = [t for t in _trials(_url(tmp_path), "tiny-moved") if t.state == TrialState.COMPLETE]
    last = max(complete, key=lambda t: t.number)
    assert last.user_attrs.get("qco.baseline") is None
    assert 0 < last.user_attrs["qco.measurement"]["psnr_db"] < float("inf")
    assert len([t for t in complete if t.user_attrs.get("qco.baseline") == "reference"]) == 1  # no second trial
