"""`qco-tune compare` and `--replay`: studies of the same spec with different GPU fingerprints.

The studies are filled by the TUI tests' FAKE BACKEND (made-up measurements written through
Optuna's API with the attributes qco-tune records); the second fingerprint is set by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tui"))
import fake_study

REPO = Path(__file__).resolve().parents[2]


def qco(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qco_tune", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
    )


def two_gpus(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'qco.db'}"
    fake_study.fill_fake_study(url, "on-h100", 30, seed=1, gpu="FAKE H100 (fake backend)")
    fake_study.fill_fake_study(url, "on-h200", 12, seed=2, gpu="FAKE H200 (fake backend)")
    return url


def test_compare_lines_up_configurations_of_two_gpus(tmp_path: Path) -> None:
    url = two_gpus(tmp_path)
    result = qco(tmp_path, "compare", "on-h100", "on-h200", "--storage", url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "FAKE H100" in out and "FAKE H200" in out
    assert "speed-up" in out and "median speed-up over on-h100" in out
    assert "on-h100: front #" in out


def test_compare_refuses_studies_of_different_workloads(tmp_path: Path) -> None:
    url = two_gpus(tmp_path)
    study = optuna.load_study(study_name="on-h200", storage=url)
    spec = dict(study.user_attrs["qco.spec"])
    spec["workload"] = {**spec["workload"], "height": 512}
    study.set_user_attr("qco.spec", spec)
    result = qco(tmp_path, "compare", "on-h100", "on-h200", "--storage", url)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "measured different things: workload.height: 1024 vs 512" in result.stderr


def test_replay_queues_the_front_once(tmp_path: Path) -> None:
    url = two_gpus(tmp_path)
    source = optuna.load_study(study_name="on-h100", storage=url)
    first = qco(tmp_path, "compare", "--replay", "on-h100", "--into", "on-h200", "--storage", url)
    assert first.returncode == 0, first.stderr
    waiting = optuna.load_study(study_name="on-h200", storage=url).get_trials(states=(TrialState.WAITING,))
    assert waiting, first.stdout
    front_params = [source.trials[r.number].params for r in fake_front(url)]
    for trial in waiting:
        assert trial.system_attrs["fixed_params"] in front_params
        assert trial.user_attrs["qco.replayed_from"].startswith("on-h100#")
    again = qco(tmp_path, "compare", "--replay", "on-h100", "--into", "on-h200", "--storage", url)
    assert "queued 0 configuration(s)" in again.stdout


def fake_front(url: str):  # type: ignore[no-untyped-def]
    from qco_tune.loop.setup import load_summary

    return load_summary(optuna.load_study(study_name="on-h100", storage=url)).front


def test_replay_needs_both_flags(tmp_path: Path) -> None:
    url = two_gpus(tmp_path)
    result = qco(tmp_path, "compare", "--replay", "on-h100", "--storage", url)
    assert result.returncode == 2 and "--replay and --into go together" in result.stderr


def test_compare_suggests_a_replay_only_for_front_configurations_missing_elsewhere(tmp_path: Path) -> None:
    from qco_tune.loop.setup import load_summary
    from qco_tune.search.compare import compare_summaries

    url = two_gpus(tmp_path)
    names = ("on-h100", "on-h200")
    comparison = compare_summaries([(n, load_summary(optuna.load_study(study_name=n, storage=url))) for n in names])
    missing = comparison.front_unmeasured_in(0, 1)
    assert missing  # 30 against 12 trials: part of the larger study's front was never tried on the other GPU
    assert all(c.on_front(0) and c.latency(1) is None for c in missing)
    assert not {c.key for c in missing} & {c.key for c in comparison.matched}
    out = qco(tmp_path, "compare", *names, "--storage", url).stdout
    assert f"{len(missing)} of on-h100's front not measured in on-h200" in out
    assert "--replay on-h100 --into on-h200" in out
    if not comparison.front_unmeasured_in(1, 0):
        assert "--replay on-h200 --into on-h100" not in out
