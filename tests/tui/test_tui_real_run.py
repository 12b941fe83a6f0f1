"""The TUI with real CPU trials: start ``qco-tune run`` from the app, watch it, stop it, export a trial.

Each trial is a fresh process that imports torch and diffusers and runs the tiny built-in pipeline on
the CPU, so this takes about a minute.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from test_tui_app import open_study, until
from tui_helpers import REPO, run, subprocess_env

from qco_tune.tui.app import QcoTuneApp
from qco_tune.tui.screens.studies import StudiesScreen
from qco_tune.tui.widgets.trials_table import TrialsTable

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("tui_started", ["in-a-scripts-background"], indirect=True)  # SIGINT ignored: the harder case
def test_start_watch_and_stop_a_real_cpu_study(in_tmp: Path, monkeypatch: pytest.MonkeyPatch, tui_started: str) -> None:
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    spec = in_tmp / "tiny.toml"
    default = (REPO / "qco_tune" / "studies" / "default.toml").read_text()
    spec.write_text('name = "tui-real"\n' + default.replace("trials = 8", "trials = 6"))
    url = "sqlite:///qco.db"
    optuna.storages.RDBStorage(url)  # an empty storage, as a first `qco-tune tui` would find

    def states() -> list[str]:
        try:
            return [t.state.name for t in optuna.load_study(study_name="tui-real", storage=url).trials]
        except KeyError:
            return []

    async def scenario() -> None:
        app = QcoTuneApp(url, poll_interval=0.5)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, StudiesScreen))
            await pilot.press("n")
            await pilot.pause(0.2)
            await pilot.press(*str(spec), "enter")
            await until(pilot, lambda: bool(app.runs.runs))
            background = app.runs.runs[0]
            # a trial finished and the next one is running: the study is live
            await until(pilot, lambda: "COMPLETE" in states() and states()[-1] == "RUNNING", timeout=240)
            assert background.running, background.tail(30)
            app.open_study("tui-real")
            screen = await open_study(pilot, app)
            table = screen.query_one("#trials", TrialsTable)
            assert any(r.category in ("front", "dominated") for r in table.shown)
            assert any(r.category == "running" for r in table.shown)
            await pilot.press("x")
            assert background.wait(60) == 130, background.tail(30)
            await until(pilot, lambda: not any(r.category == "running" for r in table.shown), timeout=10)
            failed = [r for r in table.shown if r.category == "failed"]
            assert failed and "interrupted" in (failed[-1].reason or "")
            assert not app.worker_errors

    run(scenario)
    study = optuna.load_study(study_name="tui-real", storage=url)
    interrupted = [t for t in study.trials if t.user_attrs.get("qco.status") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].state.name == "FAIL"
