"""SVG snapshots of every screen at 80×24 and 160×48 (pytest-textual-snapshot; update with --snapshot-update)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_tui_app import STUDY, until
from textual.pilot import Pilot
from textual.widgets import DataTable

from qco_tune.tui.app import LIGHT_THEME, QcoTuneApp
from qco_tune.tui.screens.compare import CompareScreen
from qco_tune.tui.screens.export import ExportScreen
from qco_tune.tui.screens.help import HelpScreen
from qco_tune.tui.screens.study import StudyScreen
from qco_tune.tui.screens.trial import TrialScreen

SIZES = {"small": (80, 24), "large": (160, 48)}


async def studies(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await until(pilot, lambda: app.screen.query_one("#studies", DataTable).row_count == 2)


async def study(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, StudyScreen) and app.screen.loaded_in is not None)
    await pilot.pause(0.2)


async def trial(pilot: Pilot[Any]) -> None:
    await study(pilot)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, TrialScreen))


async def export(pilot: Pilot[Any]) -> None:
    await study(pilot)
    await pilot.press("e")
    await until(pilot, lambda: isinstance(pilot.app.screen, ExportScreen) and pilot.app.screen.export is not None)


async def compare(pilot: Pilot[Any]) -> None:
    await studies(pilot)
    await pilot.press("space", "down", "space", "c")
    await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen) and pilot.app.screen.comparison is not None)


async def help_screen(pilot: Pilot[Any]) -> None:
    await studies(pilot)
    await pilot.press("question_mark")
    # Under load the key is handled after the press returns, and Markdown parses in a thread:
    # wait for the screen and its mounted text, then for the layout.
    await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen) and pilot.app.screen.rendered)
    await pilot.pause(0.2)


SCREENS: dict[str, tuple[str | None, Callable[[Pilot[Any]], Awaitable[None]]]] = {
    "studies": (None, studies),
    "study": (STUDY, study),
    "trial": (STUDY, trial),
    "export": (STUDY, export),
    "compare": (None, compare),
    "help": (None, help_screen),
}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(screen: str, size: str, two_studies: str, snap_compare: Any) -> None:
    initial, run_before = SCREENS[screen]
    app = QcoTuneApp(two_studies, study=initial, poll_interval=3600)
    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


def test_study_screen_light_theme(two_studies: str, snap_compare: Any) -> None:
    app = QcoTuneApp(two_studies, study=STUDY, poll_interval=3600, theme=LIGHT_THEME)
    assert snap_compare(app, terminal_size=SIZES["large"], run_before=study)
