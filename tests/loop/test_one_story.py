"""One stored CPU study told the same way by ``run``, ``show``, ``list``, the TUI and ``export``: the same
speed-up (one definition, said in the header), the same counts (ran and skipped apart) and the same units
(host RAM on a CPU study).

The study is real (SQLite, the study loop, the memory model, the planner) on a machine without CUDA; only
the trial runner is a FAKE that answers with invented CPU figures instead of starting a child.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import zlib
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from rich.console import Console

import qco_tune.loop.study as study_module
from qco_tune.cli.main import cli
from qco_tune.cli.report import print_run_result
from qco_tune.core.records import Capabilities, Measurement, TrialRequest
from qco_tune.core.spec import apply_overrides, load_default_spec
from qco_tune.core.units import format_size, parse_size
from qco_tune.loop.context import RunResult, StudyContext
from qco_tune.loop.study import run_study
from qco_tune.search.pareto import SPEEDUP_HEADER, ParetoSummary

CPU = Capabilities(cuda=False, backends=("torchao", "quanto"))
MIB = 2**20


def fake_cpu_trial(request: TrialRequest, timeout: float, on_phase: Any = None) -> Measurement:
    """A FAKE runner: invented but repeatable CPU figures per configuration (the reference slowest)."""
    spread = zlib.crc32(request.config.key().encode()) % 10
    reference = request.save_reference
    return Measurement(
        status="ok",
        device="cpu",
        latency_s=0.30 if reference else 0.10 + 0.01 * spread,
        latencies_s=(0.30,) * 3 if reference else (0.10 + 0.01 * spread,) * 3,
        step_time_s=0.01,
        peak_host_bytes=(880 + spread) * MIB,
        psnr_db=float("inf") if reference else 40.0 + spread,
        latent_cosine=1.0 if reference else 0.9990,
    )


BUDGET = "885MiB"
"""Between the fake peaks (880-889 MiB): some trials go over it."""


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, RunResult, list[RunResult]]:
    """The embedded default study at a binding budget in a fresh SQLite file, run twice: 5 trials, then one more
    with a repeat of its best queued (skipped before running). (storage URL, study name, last run, both runs)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('story') / 'qco.db'}"
    spec = apply_overrides(load_default_spec(), trials="5", budget=BUDGET)
    runs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_module, "StudyContext", functools.partial(StudyContext, execute=fake_cpu_trial))
        patch.setattr(study_module, "ensure_materialized", lambda *args: None)
        runs.append(run_study(spec, storage_url=url, caps=CPU))
        study = optuna.load_study(study_name=spec.name, storage=url)
        study.enqueue_trial(dict(study.best_trials[0].params))
        runs.append(run_study(dataclasses.replace(spec, trials=6), storage_url=url, caps=CPU))
    return url, spec.name, runs[-1], runs


def _cli(*args: str) -> str:
    out = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return out.output


def _run_output(result: RunResult, capsys: pytest.CaptureFixture[str]) -> str:
    print_run_result(result)
    return capsys.readouterr().out


def test_run_show_list_and_export_tell_one_story(
    stored: tuple[str, str, RunResult, list[RunResult]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, name, result, runs = stored
    summary = result.summary
    assert isinstance(summary, ParetoSummary) and summary.best is not None and summary.speedup is not None
    counts, speedup = summary.counts.describe(), summary.speedup.describe()
    # What the runs ran and skipped is what the study counts (the reference included).
    assert summary.counts.ran == sum(r.ran for r in runs) and summary.counts.skipped == sum(r.skipped for r in runs)
    assert summary.counts.skipped >= 1 and summary.counts.infeasible >= 1 and summary.counts.feasible >= 1

    run = _run_output(result, capsys)
    assert f"(this run: ran {result.ran}, skipped {result.skipped})" in run
    assert "say nothing about a GPU" in run and "qco-tune run --model flux.1-dev --budget 16GiB" in run
    show = _cli("show", name, "--storage", url)
    listed = _cli("list", "--storage", url)
    for text in (run, show):
        assert counts in text
        assert f"{SPEEDUP_HEADER}: {speedup}" in text
    row = next(line for line in listed.splitlines() if name in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[3:7] == [
        f"{format_size(parse_size(BUDGET))} host RAM",
        str(summary.counts.ran),
        f"{summary.counts.feasible}/{summary.counts.infeasible}/{summary.counts.failed}",
        str(summary.counts.skipped),
    ]
    assert cells[8] == speedup and SPEEDUP_HEADER in listed
    # Units: a CPU study's budget and peaks are host RAM, wherever they are shown.
    assert f"budget {format_size(parse_size(BUDGET))} of host RAM" in show and "device memory" not in show
    assert "peak host RAM" in run
    snippet = _cli("export", name, "--storage", url)
    assert 'device = "cpu"' in snippet and "peak host RAM" in snippet and f"trial {summary.best.number}" in snippet
    assert f"{summary.best.latency_s:.3f} s per call" in snippet


def test_the_tui_tells_the_same_story(stored: tuple[str, str, RunResult, list[RunResult]]) -> None:
    from textual.widgets import DataTable, Static

    from qco_tune.tui.app import QcoTuneApp
    from qco_tune.tui.screens.study import StudyScreen
    from qco_tune.tui.screens.trial import TrialScreen
    from qco_tune.tui.widgets.scatter import ScatterPlot

    url, name, result, _ = stored
    summary = result.summary
    assert summary is not None and summary.speedup is not None and summary.best is not None

    def plain(content: Any) -> str:
        console = Console(width=400, record=True, file=io.StringIO())
        console.print(content)
        return console.export_text()

    async def scenario() -> None:
        app = QcoTuneApp(url, poll_interval=3600)
        async with app.run_test(size=(200, 40)) as pilot:
            table = app.screen.query_one("#studies", DataTable)
            while not table.row_count:
                await pilot.pause(0.05)
            labels = [plain(column.label) for column in table.columns.values()]
            assert any(SPEEDUP_HEADER in label for label in labels)
            cells = [plain(cell).strip() for cell in table.get_row(name)]
            assert cells[2:5] == [
                str(summary.counts.ran),
                f"{summary.counts.feasible}/{summary.counts.infeasible}/{summary.counts.failed}",
                str(summary.counts.skipped),
            ]
            assert cells[6] == summary.speedup.describe() and cells[7] == f"{format_size(parse_size(BUDGET))} host RAM"
            await pilot.press("enter")
            while not (isinstance(app.screen, StudyScreen) and app.screen.loaded_in is not None):
                await pilot.pause(0.05)
            info = plain(app.screen.query_one("#info", Static).content)
            assert f"≤{format_size(parse_size(BUDGET))} host RAM" in info and f"{summary.counts.ran} ran" in info
            assert summary.speedup.describe() in info
            plot = app.screen.query_one("#plot", ScatterPlot)
            assert "GiB peak host RAM" in plain(plot.render())
            app.screen._select(summary.best.number)
            await pilot.press("enter")
            while not isinstance(app.screen, TrialScreen):
                await pilot.pause(0.05)
            await pilot.pause(0.1)
            measured = plain(app.screen.query_one("#trial-measure", Static).content)
            assert summary.best.measurement is not None and summary.best.measurement.psnr_db is not None
            assert f"{summary.best.measurement.psnr_db:.1f} dB · 0.99900" in measured
            assert "host RAM" in measured

    import asyncio

    asyncio.run(scenario())
