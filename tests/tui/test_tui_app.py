"""The real app driven by Textual's Pilot against SQLite storages filled by the fake backend."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from fake_study import create_fake_study
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static
from tui_helpers import HERE, run, subprocess_env

from qco_tune.tui.app import QcoTuneApp
from qco_tune.tui.screens.compare import CompareScreen
from qco_tune.tui.screens.export import ExportScreen
from qco_tune.tui.screens.help import HelpScreen
from qco_tune.tui.screens.start import QuitRunsScreen
from qco_tune.tui.screens.studies import StudiesScreen
from qco_tune.tui.screens.study import StudyScreen
from qco_tune.tui.screens.trial import TrialScreen
from qco_tune.tui.widgets.scatter import ScatterPlot
from qco_tune.tui.widgets.trials_table import TrialsTable

STUDY = "flux-dev-16gib"


async def until(pilot: Pilot[None], cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {cond}")
        await pilot.pause(0.05)


def text_of(app: QcoTuneApp, selector: str) -> str:
    """The plain text a ``Static`` shows (rich renderables rendered wide, so nothing wraps)."""
    content = app.screen.query_one(selector, Static).content
    if isinstance(content, str):
        return content
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


async def open_study(pilot: Pilot[None], app: QcoTuneApp) -> StudyScreen:
    await until(pilot, lambda: isinstance(app.screen, StudyScreen) and app.screen.loaded_in is not None)
    assert isinstance(app.screen, StudyScreen)
    return app.screen


def test_studies_screen_opens_a_study_and_goes_back(two_studies: str) -> None:
    async def scenario() -> None:
        app = QcoTuneApp(two_studies)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.screen.query_one("#studies", DataTable).row_count == 2)
            assert app.study_names == [STUDY, "flux-dev-16gib-l40s"]
            await pilot.press("s", "s")  # sort by trials, then counts
            await pilot.press("enter")
            screen = await open_study(pilot, app)
            assert screen.study_name in app.study_names
            await pilot.press("escape")
            assert isinstance(app.screen, StudiesScreen)
            assert not app.worker_errors

    run(scenario)


def test_plot_and_table_selection_are_linked(two_studies: str) -> None:
    async def scenario() -> None:
        app = QcoTuneApp(two_studies, study=STUDY)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_study(pilot, app)
            plot, table = screen.query_one("#plot", ScatterPlot), screen.query_one("#trials", TrialsTable)
            assert screen.data is not None and screen.data.summary.best is not None
            assert table.current_number == screen.data.summary.best.number == plot.selected  # opens on the best
            await pilot.pause(0.1)
            layout = plot._layout
            assert layout is not None
            target = next(
                n for n in layout.positions if n != plot.selected and layout.nearest(*layout.positions[n]) == n
            )
            col, row = layout.positions[target]
            await pilot.click("#plot", offset=(col + 1, row + 1))  # +1: the plot's border
            await until(pilot, lambda: table.current_number == target)
            assert plot.selected == target and screen.selected == target
            table.focus()
            await pilot.press("down")
            moved = table.current_number
            assert moved != target and screen.selected == moved
            assert plot.selected == (moved if moved in plot.point_keys else None)
            plot.focus()
            await pilot.press("left")
            assert table.current_number == plot.selected
            assert not app.worker_errors

    run(scenario)


def test_filters_by_state_and_knob(two_studies: str) -> None:
    async def scenario() -> None:
        app = QcoTuneApp(two_studies, study=STUDY)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_study(pilot, app)
            table = screen.query_one("#trials", TrialsTable)
            total = table.row_count
            await pilot.press("t")  # state filter: feasible
            assert screen.query_one("#filter", Input).value == "state:feasible"
            assert table.row_count < total and all(r.feasible for r in table.shown)
            await pilot.press("slash")
            box = screen.query_one("#filter", Input)
            box.value = ""
            await pilot.press(*"failed")
            await pilot.pause(0.1)
            assert table.row_count >= 1 and all(r.category == "failed" for r in table.shown)
            box.value = "compile=regional"
            await pilot.pause(0.1)
            assert all(r.config is not None and r.config.compile == "regional" for r in table.shown)
            plot = screen.query_one("#plot", ScatterPlot)
            assert plot.point_keys <= {r.number for r in table.shown}
            await pilot.press("enter")
            assert app.focused is table
            await pilot.press("s")  # sort by the next column, still filtered
            assert all(r.config is not None and r.config.compile == "regional" for r in table.shown)

    run(scenario)


def test_trial_detail_of_a_failed_and_an_old_trial(two_studies: str) -> None:
    async def scenario() -> None:
        app = QcoTuneApp(two_studies, study=STUDY)
        async with app.run_test(size=(100, 40)) as pilot:
            screen = await open_study(pilot, app)
            assert screen.data is not None
            failed = next(r for r in screen.data.summary.rows if r.category == "failed")
            screen._select(failed.number)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TrialScreen))
            failure = text_of(app, "#trial-failure")
            assert failed.reason and failed.reason.split(":")[0] in failure and "pipeline.py" in failure
            assert "Configuration" in text_of(app, "#trial-config")
            trial_screen = app.screen
            assert isinstance(trial_screen, TrialScreen)
            trial_screen.number = 42  # the trial written by an older version
            trial_screen._show()
            assert "no measurement recorded" in text_of(app, "#trial-measure")
            await pilot.press("right")
            assert trial_screen.number != 42
            await pilot.press("escape")
            assert isinstance(app.screen, StudyScreen)

    run(scenario)


def test_export_writes_what_the_cli_prints(two_studies: str, in_tmp: Path) -> None:
    async def scenario() -> tuple[int, str]:
        app = QcoTuneApp(two_studies, study=STUDY)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_study(pilot, app)
            number = screen.selected
            assert number is not None
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, ExportScreen) and app.screen.export is not None)
            export = app.screen
            assert isinstance(export, ExportScreen)
            export.query_one("#path", Input).value = str(in_tmp / "out" / "tuned.py")
            await pilot.press("w")
            await until(pilot, lambda: (in_tmp / "out" / "tuned.py").exists())
            await pilot.press("w")  # exists now: a warning, then the second write overwrites
            await pilot.press("w")
            await pilot.press("y")  # copy: through the terminal, no error
            await pilot.press("escape")
            assert isinstance(app.screen, StudyScreen)
            return number, (in_tmp / "out" / "tuned.py").read_text()

    number, written = run(scenario)
    cli = subprocess.run(
        [sys.executable, "-m", "qco_tune", "export", STUDY, "--trial", str(number), "--storage", two_studies],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    if "No such command" in cli.stderr:
        pytest.skip("this installation has no `qco-tune export`")
    assert cli.returncode == 0, cli.stderr
    assert written == cli.stdout
    assert written.startswith("# Exported by qco-tune")


def test_compare_two_studies(two_studies: str) -> None:
    async def scenario() -> None:
        app = QcoTuneApp(two_studies)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.screen.query_one("#studies", DataTable).row_count == 2)
            await pilot.press("c")  # nothing marked: a warning, no screen
            assert isinstance(app.screen, StudiesScreen)
            await pilot.press("space", "down", "space", "c")
            await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison is not None)
            screen = app.screen
            assert isinstance(screen, CompareScreen) and screen.comparison is not None
            table = screen.query_one("#compare-table", DataTable)
            assert table.row_count == len(screen.comparison.configs) > 0
            plot = screen.query_one("#plot", ScatterPlot)
            assert {k[0] for k in plot.point_keys} == {0, 1}  # type: ignore[index]
            table.focus()
            await pilot.press("down")
            assert plot.selected is not None
            await pilot.press("escape")
            app.open_study(STUDY)
            await open_study(pilot, app)
            await pilot.press("c")  # from a study: every other study of the same model
            await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison is not None)
            assert app.screen.names == (STUDY, "flux-dev-16gib-l40s")
            assert not app.worker_errors

    run(scenario)


def test_live_update_from_another_process(two_studies: str) -> None:
    async def scenario() -> None:
        app = QcoTuneApp(two_studies, study=STUDY, poll_interval=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_study(pilot, app)
            table = screen.query_one("#trials", TrialsTable)
            before, selected = table.row_count, screen.selected
            subprocess.run(
                [sys.executable, str(HERE / "fake_study.py"), "add", two_studies, STUDY, "--count", "3"],
                check=True,
                env=subprocess_env(),
                timeout=120,
            )
            await until(pilot, lambda: table.row_count == before + 3, timeout=20)
            assert screen.selected == selected == table.current_number
            counts = screen.data.overview.counts if screen.data else None
            assert counts is not None and counts.total == 46
            assert f"{counts.ran} ran: " in text_of(app, "#info") and f"· {counts.skipped} skipped" in text_of(
                app, "#info"
            )

    run(scenario)


def test_start_and_stop_a_study_in_the_background(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, tui_started: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # the background process imports qco_tune
    spec = in_tmp / "spec.toml"
    spec.write_text('name = "fake-run"\nmodel = "tiny-flux"\n')
    url = "sqlite:///qco.db"
    create_fake_study(url, "other")  # so the storage exists

    async def scenario() -> None:
        app = QcoTuneApp(url, poll_interval=0.2, run_command=[sys.executable, str(HERE / "fake_runner.py")])
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, StudiesScreen) and app.study_names == ["other"])
            await pilot.press("n")
            await pilot.pause(0.1)
            await pilot.press(*str(spec))
            await pilot.press("enter")
            await until(pilot, lambda: bool(app.runs.runs))
            started = app.runs.runs[0]
            await until(pilot, lambda: "fake-run" in app.study_names or not started.running, timeout=30)
            assert started.running, started.tail(20)
            run_ = app.runs.for_study("fake-run")
            assert run_ is not None and run_.running
            app.open_study("fake-run")
            screen = await open_study(pilot, app)
            table = screen.query_one("#trials", TrialsTable)
            await until(pilot, lambda: table.row_count >= 3, timeout=30)  # progress read from the storage
            await pilot.press("x")
            assert run_.wait(30) == 130
            await until(pilot, lambda: any(r.category == "failed" for r in table.shown), timeout=10)

    run(scenario)
    study = optuna.load_study(study_name="fake-run", storage=url)
    interrupted = [t for t in study.trials if t.user_attrs.get("qco.status") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].state.name == "FAIL"


def test_empty_and_missing_storages_show_a_message(in_tmp: Path) -> None:
    async def scenario(url: str, expected: str) -> None:
        app = QcoTuneApp(url)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: expected in text_of(app, "#message"))

    run(lambda: scenario("sqlite:///absent.db", "no storage at"))
    optuna.storages.RDBStorage("sqlite:///empty.db")
    run(lambda: scenario("sqlite:///empty.db", "No studies in this storage yet"))
    run(lambda: scenario("not-a-url", "not a storage URL"))


def test_study_without_finished_trials(in_tmp: Path) -> None:
    study = create_fake_study("sqlite:///qco.db", "fresh")
    study.ask()  # one RUNNING trial, nothing finished

    async def scenario() -> None:
        app = QcoTuneApp("sqlite:///qco.db", study="fresh")
        async with app.run_test(size=(80, 24)) as pilot:
            await open_study(pilot, app)
            assert "no feasible trial yet" in text_of(app, "#info")
            assert "1 running" in text_of(app, "#info")
            await pilot.press("e")  # the running trial has no configuration: a message, no crash
            await pilot.press("enter")
            assert not app.worker_errors

    run(scenario)


def test_storage_locked_then_deleted_while_open(two_studies: str) -> None:
    import sqlite3

    async def scenario() -> None:
        app = QcoTuneApp(two_studies, study=STUDY, poll_interval=0.2, lock_timeout=0.1)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_study(pilot, app)
            holder = sqlite3.connect("qco.db", isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            await until(pilot, lambda: "locked" in text_of(app, "#status"))
            holder.execute("ROLLBACK")
            holder.close()
            await until(pilot, lambda: screen.query_one("#status").has_class("hidden"))
            Path("qco.db").unlink()
            await until(pilot, lambda: "no storage at" in text_of(app, "#status"))
            assert screen.query_one("#trials", TrialsTable).row_count == 43  # what was read stays
            await pilot.press("escape")
            await until(pilot, lambda: "no storage at" in text_of(app, "#message"))
            assert not app.worker_errors

    run(scenario)


def test_help_palette_and_theme(two_studies: str) -> None:
    async def scenario() -> None:
        app = QcoTuneApp(two_studies)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: bool(app.study_names))
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            dark = app.current_theme.dark
            await pilot.press("ctrl+t")
            assert app.current_theme.dark != dark
            await pilot.press("ctrl+p")
            await pilot.pause(0.2)
            await pilot.press(*"open study flux-dev-16gib-l40s")
            await pilot.pause(0.3)
            await pilot.press("enter")
            screen = await open_study(pilot, app)
            assert screen.study_name == "flux-dev-16gib-l40s"

    run(scenario)


def test_optuna_api_path_shows_the_same_study(two_studies: str) -> None:
    async def scenario(optuna_api: bool) -> list[int]:
        app = QcoTuneApp(two_studies, study=STUDY, optuna_api=optuna_api)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_study(pilot, app)
            return [r.number for r in screen.query_one("#trials", TrialsTable).shown]

    assert run(lambda: scenario(True)) == run(lambda: scenario(False))


def test_quit_with_a_running_study_asks_and_stops_it(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, tui_started: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    spec = in_tmp / "spec.toml"
    spec.write_text('name = "fake-run"\nmodel = "tiny-flux"\n')
    create_fake_study("sqlite:///qco.db", "other")

    async def scenario() -> QcoTuneApp:
        app = QcoTuneApp(
            "sqlite:///qco.db", poll_interval=0.2, run_command=[sys.executable, str(HERE / "fake_runner.py")]
        )
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: bool(app.study_names))
            app.start_run(spec)
            await until(pilot, lambda: "fake-run" in app.study_names, timeout=30)
            await pilot.press("q")
            assert isinstance(app.screen, QuitRunsScreen)
            await pilot.press("escape")  # cancel: still running
            assert app.runs.active
            await pilot.press("q")
            await pilot.click("#stop")
            await pilot.pause(0.2)
        return app

    app = run(scenario)
    assert [r.returncode for r in app.runs.runs] == [130]
