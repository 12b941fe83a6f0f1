"""The export screen: the generated code, highlighted; write it to a file or copy it to the clipboard."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Static

from qco_tune.store.studydata import StudyData
from qco_tune.tui.exporting import ExportText, Language, export_text, suggested_name, write_export

FORMATS: tuple[Language, ...] = ("python", "json", "toml")


class ExportScreen(Screen[None]):
    """Preview of ``qco-tune export`` for one trial."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("w", "write", "Write"),
        Binding("y", "copy", "Copy"),
        Binding("f", "format", "Format"),
        Binding("o", "focus_path", "Path", show=False),
    ]

    def __init__(self, data: StudyData, number: int) -> None:
        super().__init__()
        self.data = data
        self.number = number
        self.fmt: Language = "python"
        self.export: ExportText | None = None
        self._confirm_overwrite: Path | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="export-note", classes="info")
        with VerticalScroll(id="export-code"):
            yield Static(Text("rendering…", style="dim"), id="code")
        with Horizontal(id="export-bar"):
            yield Input(value=suggested_name(self.data.name, self.number, "python"), id="path")
            yield Button("Write", id="write", variant="primary")
            yield Button("Copy", id="copy")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"{self.data.name} · export trial {self.number}"
        self.render_export()
        self.query_one("#export-code").focus()

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def render_export(self) -> None:
        try:
            result = export_text(self.data, self.number, self.fmt)
        except ValueError as exc:
            self.app.call_from_thread(self._show_error, str(exc))
            return
        self.app.call_from_thread(self._show, result)

    def _show_error(self, message: str) -> None:
        self.query_one("#code", Static).update(Text(message, style="bold red"))

    def _show(self, result: ExportText) -> None:
        self.export = result
        theme = "ansi_light" if not self.app.current_theme.dark else "ansi_dark"
        self.query_one("#code", Static).update(
            Syntax(result.text, result.language, theme=theme, line_numbers=True, word_wrap=False)
        )
        note = Text.assemble(("trial ", "dim"), (str(self.number), "bold"), (f" · {result.language}", "dim"))
        if result.warning:
            note.append(f" · {result.warning}", "yellow")
        self.query_one("#export-note", Static).update(note)
        path = self.query_one("#path", Input)
        current = Path(path.value)
        if current.name.startswith("tuned-") or not path.value:
            path.value = str(current.with_name(result.filename))

    # -- actions --------------------------------------------------------------------------------
    def action_back(self) -> None:
        if self.focused is self.query_one("#path", Input):
            self.query_one("#export-code").focus()
        else:
            self.app.pop_screen()

    def action_format(self) -> None:
        self.fmt = FORMATS[(FORMATS.index(self.fmt) + 1) % len(FORMATS)]
        self.render_export()

    def action_focus_path(self) -> None:
        self.query_one("#path", Input).focus()

    def action_write(self) -> None:
        if self.export is None:
            return
        path = Path(self.query_one("#path", Input).value.strip() or self.export.filename)
        overwrite = self._confirm_overwrite == path
        try:
            written = write_export(self.export, path, overwrite=overwrite)
        except FileExistsError:
            self._confirm_overwrite = path
            self.notify(f"{path} exists: write again to overwrite it", severity="warning")
            return
        except OSError as exc:
            self.notify(f"cannot write {path}: {exc.strerror or exc}", severity="error")
            return
        self._confirm_overwrite = None
        self.notify(f"wrote {written}", title="exported")

    def action_copy(self) -> None:
        if self.export is None:
            return
        self.app.copy_to_clipboard(self.export.text)
        self.notify("copied to the clipboard (through the terminal; some terminals need it enabled)")

    @on(Button.Pressed, "#write")
    def _write_pressed(self) -> None:
        self.action_write()

    @on(Button.Pressed, "#copy")
    def _copy_pressed(self) -> None:
        self.action_copy()

    @on(Input.Submitted, "#path")
    def _path_submitted(self) -> None:
        self.action_write()
