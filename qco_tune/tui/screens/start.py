"""Starting a study from a spec file in a background process, and quitting while runs are active."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from qco_tune.store.storage import mask_url

if TYPE_CHECKING:
    from qco_tune.tui.app import QcoTuneApp


class StartStudyScreen(ModalScreen[None]):
    """Asks for a spec file; runs ``qco-tune run SPEC --storage URL`` in the background."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Cancel")]

    def compose(self) -> ComposeResult:
        app: QcoTuneApp = self.app  # type: ignore[assignment]
        with Vertical(id="dialog"):
            yield Label("Start a study from a spec file (TOML)", classes="title")
            yield Input(placeholder="studies/flux-dev-16gib.toml", id="spec")
            yield Label(f"storage: {mask_url(app.storage_url)}", classes="dim")
            with Horizontal(classes="buttons"):
                yield Button("Start", id="start", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#spec", Input).focus()

    @on(Input.Submitted, "#spec")
    @on(Button.Pressed, "#start")
    def _start(self) -> None:
        text = self.query_one("#spec", Input).value.strip()
        if not text:
            self.notify("give the path of a spec file", severity="warning")
            return
        path = Path(text).expanduser()
        if not path.is_file():
            self.notify(f"no file at {path}", severity="error")
            return
        self.app.pop_screen()
        app: QcoTuneApp = self.app  # type: ignore[assignment]
        app.start_run(path)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.app.pop_screen()


class QuitRunsScreen(ModalScreen[None]):
    """Quitting with studies running in the background: stop them, leave them running, or stay."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Cancel")]

    def compose(self) -> ComposeResult:
        app: QcoTuneApp = self.app  # type: ignore[assignment]
        names = ", ".join(repr(r.study) for r in app.runs.active)
        with Vertical(id="dialog"):
            yield Label(f"Running in the background: {names}", classes="title")
            with Horizontal(classes="buttons"):
                yield Button("Stop and quit", id="stop", variant="error")
                yield Button("Leave running", id="leave")
                yield Button("Cancel", id="cancel")

    @on(Button.Pressed, "#stop")
    def _stop(self) -> None:
        app: QcoTuneApp = self.app  # type: ignore[assignment]
        app.runs.stop_all()
        app.exit()

    @on(Button.Pressed, "#leave")
    def _leave(self) -> None:
        self.app.exit()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.app.pop_screen()
