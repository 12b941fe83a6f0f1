"""``qco-tune tui``: the Textual application. Screens live in ``screens/``, widgets in ``widgets/``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.worker import Worker, WorkerState

from qco_tune.store.storage import mask_url
from qco_tune.store.studydata import DataError, StorageReader
from qco_tune.store.tables import open_reader
from qco_tune.tui.commands import QcoCommands
from qco_tune.tui.runs import RUN_COMMAND, RunManager

DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"


class QcoTuneApp(App[None]):
    """Studies, the Pareto front, trials, export, comparison and live progress of an Optuna storage."""

    TITLE = "qco-tune"
    CSS_PATH = "qco_tune.tcss"
    COMMANDS = App.COMMANDS | {QcoCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False),
    ]

    def __init__(
        self,
        storage_url: str,
        *,
        study: str | None = None,
        optuna_api: bool = False,
        poll_interval: float = 2.0,
        lock_timeout: float = 5.0,
        run_command: Sequence[str] = RUN_COMMAND,
        theme: str = DARK_THEME,
    ) -> None:
        super().__init__()
        self.storage_url = storage_url
        self.initial_study = study
        self.poll_interval = poll_interval
        self.runs = RunManager(run_command)
        self.study_names: list[str] = []
        """Names the studies screen last read (for the command palette)."""
        self.reader: StorageReader | None = None
        self.reader_error: str | None = None
        try:
            self.reader = open_reader(storage_url, optuna_api=optuna_api, lock_timeout=lock_timeout)
        except DataError as exc:
            self.reader_error = str(exc)
        self.theme = theme
        self.sub_title = mask_url(storage_url)
        self.worker_errors: list[BaseException] = []
        """Unexpected errors of background workers: shown as notifications, kept for tests."""

    def on_mount(self) -> None:
        from qco_tune.tui.screens.studies import StudiesScreen

        self.push_screen(StudiesScreen())
        if self.initial_study:
            self.open_study(self.initial_study)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self.worker_errors.append(error)
            self.notify(f"{type(error).__name__}: {error}", title="internal error", severity="error", timeout=10)

    # -- navigation used by screens and commands --------------------------------------------------
    def open_study(self, name: str) -> None:
        from qco_tune.tui.screens.study import StudyScreen

        self.push_screen(StudyScreen(name))

    def open_compare(self, names: Sequence[str]) -> None:
        from qco_tune.tui.screens.compare import CompareScreen

        if len(names) < 2:
            self.notify("mark two or more studies with space first", severity="warning")
            return
        self.push_screen(CompareScreen(tuple(names)))

    def start_study_dialog(self) -> None:
        from qco_tune.tui.screens.start import StartStudyScreen

        self.push_screen(StartStudyScreen())

    def start_run(self, spec_path: Path) -> None:
        try:
            run = self.runs.start(spec_path, self.storage_url)
        except (OSError, RuntimeError) as exc:
            self.notify(str(exc), title="cannot start", severity="error")
            return
        self.notify(f"started study {run.study!r} (pid {run.pid}); x stops it", title="background run")

    # -- actions ------------------------------------------------------------------------------------
    def action_help(self) -> None:
        from qco_tune.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT_THEME if self.current_theme.dark else DARK_THEME

    async def action_quit(self) -> None:
        if self.runs.active:
            from qco_tune.tui.screens.start import QuitRunsScreen

            self.push_screen(QuitRunsScreen())
            return
        self.exit()
