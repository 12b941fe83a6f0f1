"""Workers sharing a study through Optuna's storage: PostgreSQL (several workers) and SQLite (two, one host).

Real processes end to end: `qco-tune run --prepare-only` creates the study, `qco-tune worker`
processes take its trials, each trial in its own child process on the CPU with the tiny pipeline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[2]


def qco(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qco_tune", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def prepare(cwd: Path, url: str, name: str, trials: int) -> None:
    finish(qco(cwd, "run", "--prepare-only", "--trials", str(trials), "--study", name, "--storage", url), 300)


_storages: dict[str, optuna.storages.RDBStorage] = {}


def storage_of(url: str) -> optuna.storages.RDBStorage:
    """One storage, so one connection pool, per database. A storage opened per poll keeps its connections
    until the garbage collector breaks its reference cycles; polling for minutes on a loaded machine then
    reaches PostgreSQL's max_connections, and the next client (a worker under test) is refused."""
    if url not in _storages:
        _storages[url] = optuna.storages.RDBStorage(url)
    return _storages[url]


@pytest.fixture(autouse=True, scope="module")
def _close_storages() -> Iterator[None]:
    yield
    for storage in _storages.values():
        storage.engine.dispose()
    _storages.clear()


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage_of(url)).get_trials()


def wait_for(predicate: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def ran(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials that count: finished or failed for a reason of their own (not handed back)."""
    return [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.FAIL) and t.user_attrs.get("qco.status") != "interrupted"
    ]


def assert_shared_without_loss(url: str, name: str, target: int, workers: int) -> None:
    trials = trials_of(url, name)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    done = ran(trials)
    # Workers check the target before asking, so at most one trial per extra worker may overshoot it;
    # the reference is measurement, not a trial of the target, and runs besides.
    counted = [t for t in done if t.user_attrs.get("qco.baseline") not in ("reference", "reference (model offload)")]
    assert target <= len(counted) <= target + workers - 1 and len(done) == len(counted) + 1
    keys = [tuple(sorted(t.params.items())) for t in done]
    assert len(keys) == len(set(keys)), "a configuration ran twice"
    for trial in done:
        assert "qco.measurement" in trial.user_attrs and "qco.fingerprint" in trial.user_attrs
    return None


def running_by(url: str, name: str, pid: int) -> optuna.trial.FrozenTrial | None:
    try:
        trials = trials_of(url, name)
    except KeyError:
        return None
    return next(
        (
            t
            for t in trials
            if t.state == TrialState.RUNNING and t.user_attrs.get("qco.pid") == pid and "qco.config" in t.user_attrs
        ),
        None,
    )


@pytest.mark.slow
def test_four_workers_share_a_postgres_study(tmp_path: Path, postgres_url: str) -> None:
    prepare(tmp_path, postgres_url, "shared", 6)
    workers = [qco(tmp_path, "worker", "--storage", postgres_url, "--exit-when-idle", "--poll", "1") for _ in range(4)]
    for worker in workers:
        finish(worker)
    assert_shared_without_loss(postgres_url, "shared", 6, 4)
    pids = {t.user_attrs["qco.pid"] for t in ran(trials_of(postgres_url, "shared"))}
    assert len(pids) >= 2, "the trials were not shared between workers"
    study = optuna.load_study(study_name="shared", storage=storage_of(postgres_url))
    assert study.user_attrs["qco.gpu_kinds"] == [study.user_attrs["qco.gpu"]]


@pytest.mark.slow
def test_two_workers_share_a_sqlite_study_on_one_host(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'qco.db'}"
    prepare(tmp_path, url, "local", 4)
    workers = [qco(tmp_path, "worker", "--storage", url, "--exit-when-idle", "--poll", "1") for _ in range(2)]
    for worker in workers:
        finish(worker)
    assert_shared_without_loss(url, "local", 4, 2)


@pytest.mark.slow
def test_a_killed_workers_trial_is_recovered_and_run_by_another(tmp_path: Path, postgres_url: str) -> None:
    prepare(tmp_path, postgres_url, "killed", 2)
    victim = qco(tmp_path, "worker", "--storage", postgres_url, "--poll", "1")
    wait_for(lambda: running_by(postgres_url, "killed", victim.pid) is not None)
    lost = running_by(postgres_url, "killed", victim.pid)
    assert lost is not None
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    finish(qco(tmp_path, "worker", "--storage", postgres_url, "--exit-when-idle", "--poll", "1"))
    trials = trials_of(postgres_url, "killed")
    assert trials[lost.number].state == TrialState.FAIL
    assert trials[lost.number].user_attrs["qco.reason"].startswith("interrupted: owner process is gone")
    retries = [t for t in trials if t.user_attrs.get("qco.retry_of") == lost.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == lost.params
    assert_shared_without_loss(postgres_url, "killed", 2, 1)


@pytest.mark.slow
def test_sigterm_hands_the_running_trial_back(tmp_path: Path, postgres_url: str) -> None:
    prepare(tmp_path, postgres_url, "termed", 2)
    worker = qco(tmp_path, "worker", "--storage", postgres_url, "--poll", "1")
    wait_for(lambda: running_by(postgres_url, "termed", worker.pid) is not None)
    handed = running_by(postgres_url, "termed", worker.pid)
    assert handed is not None
    worker.send_signal(signal.SIGTERM)
    out = finish(worker, timeout=60)
    assert "Traceback" not in out
    trials = trials_of(postgres_url, "termed")
    assert trials[handed.number].state == TrialState.FAIL
    assert trials[handed.number].user_attrs["qco.status"] == "interrupted"
    queued = [t for t in trials if t.user_attrs.get("qco.retry_of") == handed.number]
    assert len(queued) == 1 and queued[0].state == TrialState.WAITING
    assert queued[0].system_attrs["fixed_params"] == handed.params  # a queued trial's params are fixed there


def run_quick(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qco_tune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_worker_for_a_study_that_does_not_exist(tmp_path: Path, postgres_url: str) -> None:
    error = one_line_error(run_quick(tmp_path, "worker", "--storage", postgres_url, "--study", "nope"))
    assert "no study named 'nope'" in error


def test_wrong_password_is_reported_with_credentials_masked(tmp_path: Path, postgres_url: str) -> None:
    wrong = postgres_url.replace(":qco-test-pw@", ":not-the-password@")
    error = one_line_error(run_quick(tmp_path, "worker", "--storage", wrong))
    assert "not-the-password" not in error and "***" in error and "password" in error


def test_worker_refuses_a_study_tied_to_another_gpu_kind(tmp_path: Path, postgres_url: str) -> None:
    prepare(tmp_path, postgres_url, "elsewhere", 2)
    study = optuna.load_study(study_name="elsewhere", storage=storage_of(postgres_url))
    study.set_user_attr("qco.gpu", "NVIDIA H200")
    error = one_line_error(run_quick(tmp_path, "worker", "--storage", postgres_url, "--study", "elsewhere"))
    assert "tied to NVIDIA H200" in error
