"""The studies screen: every study in the storage, sortable; opens one, marks several to compare."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from qco_tune.core.units import format_size
from qco_tune.search.pareto import SPEEDUP_HEADER
from qco_tune.store.storage import mask_url
from qco_tune.store.studydata import DataError, StudyOverview

if TYPE_CHECKING:
    from qco_tune.tui.app import QcoTuneApp

COLUMNS: tuple[tuple[str, str], ...] = (
    ("mark", " "),
    ("name", "study"),
    ("ran", "ran"),
    ("counts", "ok/over/failed"),
    ("skipped", "skipped"),
    ("best", "best feasible"),
    ("speedup", SPEEDUP_HEADER),
    ("budget", "budget"),
    ("gpu", "GPU"),
    ("model", "model"),
)
SORTS: dict[str, Any] = {
    "name": lambda o: o.name,
    "model": lambda o: o.model,
    "gpu": lambda o: o.gpu,
    "budget": lambda o: o.budget_bytes or 0,
    "ran": lambda o: o.counts.ran,
    "counts": lambda o: o.counts.feasible,
    "skipped": lambda o: o.counts.skipped,
    "best": lambda o: o.best_latency_s if o.best_latency_s is not None else float("inf"),
    "speedup": lambda o: -(o.speedup.ratio if o.speedup else 0.0),
}


def _ran(o: StudyOverview) -> Text:
    text = Text(str(o.counts.ran), justify="right")
    if o.counts.running:
        text.append(f" +{o.counts.running} running", "bold")
    return text


def _counts(o: StudyOverview) -> Text:
    c = o.counts
    text = Text()
    text.append(str(c.feasible))
    text.append("/")
    text.append(str(c.infeasible), "red" if c.infeasible else "")
    text.append("/")
    text.append(str(c.failed), "red" if c.failed else "")
    return text


class StudiesScreen(Screen[None]):
    """Every study of the storage."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("s", "sort", "Sort"),
        Binding("n", "start", "New run"),
        Binding("x", "stop", "Stop run", show=False),
        Binding("r", "reload", "Reload", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.overviews: list[StudyOverview] = []
        self.marked: set[str] = set()
        self.sort_key = "name"
        self.sort_reverse = False
        self.error: str | None = None

    @property
    def qapp(self) -> QcoTuneApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="message", classes="message")
        yield DataTable(id="studies", cursor_type="row", zebra_stripes=True)
        yield Static(id="runs", classes="status hidden")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#studies", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.query_one("#message", Static).update("reading the storage…")
        if self.qapp.reader_error:
            self._show_error(self.qapp.reader_error)
            return
        self.load()
        self.set_interval(self.qapp.poll_interval, self.poll)
        self._show_runs()
        self.set_interval(1.0, self._show_runs)

    # -- loading ------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="studies", exit_on_error=False)
    def load(self) -> None:
        reader = self.qapp.reader
        if reader is None:
            return
        try:
            overviews = reader.list_studies()
        except DataError as exc:
            self.app.call_from_thread(self._show_error, str(exc))
            return
        self.app.call_from_thread(self._show, overviews)

    def poll(self) -> None:
        if self.is_current:
            self.load()

    def _show_error(self, message: str) -> None:
        self.error = message
        self.query_one("#message", Static).update(Text(message, style="bold red"))
        self.query_one("#message").remove_class("hidden")

    def _show(self, overviews: list[StudyOverview]) -> None:
        self.error = None
        message = self.query_one("#message", Static)
        if not overviews:
            message.update(
                Text.assemble(
                    ("No studies in this storage yet.\n", "bold"),
                    f"{mask_url(self.qapp.storage_url)}\n",
                    "Run `qco-tune run` in a shell, or press n to start one from a spec file here.",
                )
            )
            message.remove_class("hidden")
        else:
            message.add_class("hidden")
        if overviews == self.overviews and self.query_one("#studies", DataTable).row_count:
            return
        self.overviews = overviews
        self.qapp.study_names = [o.name for o in overviews]
        self._fill()

    def _fill(self) -> None:
        table = self.query_one("#studies", DataTable)
        current = self._current()
        table.clear()
        rows = sorted(self.overviews, key=SORTS[self.sort_key], reverse=self.sort_reverse)
        for o in rows:
            best = f"{o.best_latency_s:.3f} s #{o.best_number}" if o.best_latency_s is not None else "-"
            speedup = o.speedup.describe() if o.speedup else "-"
            table.add_row(
                Text("✓", style="bold") if o.name in self.marked else "",
                Text(o.name, style="bold"),
                _ran(o),
                _counts(o),
                Text(str(o.counts.skipped), justify="right", style="dim"),
                best,
                speedup,
                f"{format_size(o.budget_bytes)} {o.counted_memory}",
                o.gpu,
                o.model,
                key=o.name,
            )
        for key, label in COLUMNS:
            table.columns[key].label = Text(label + (" ▼" if self.sort_reverse else " ▲") * (key == self.sort_key))  # type: ignore[index]
        if current is not None and current in table.rows:
            table.move_cursor(row=table.get_row_index(current), animate=False)

    def _current(self) -> str | None:
        table = self.query_one("#studies", DataTable)
        if not table.row_count:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:  # cell gone while refreshing
            return None

    def _show_runs(self) -> None:
        lines = []
        for run in self.qapp.runs.runs[-3:]:
            tail = run.tail().replace("[", "\\[")[:120]
            lines.append(f"{run.study} · pid {run.pid} · {run.state} · {run.elapsed():.0f} s · {tail}")
        runs = self.query_one("#runs", Static)
        runs.update("\n".join(lines))
        runs.set_class(not lines, "hidden")

    # -- actions --------------------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.qapp.open_study(str(event.row_key.value))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = str(event.column_key.value)
        if key in SORTS:
            self.sort_reverse = not self.sort_reverse if key == self.sort_key else False
            self.sort_key = key
            self._fill()

    def action_open(self) -> None:
        name = self._current()
        if name:
            self.qapp.open_study(name)

    def action_mark(self) -> None:
        name = self._current()
        if name:
            self.marked ^= {name}
            self.query_one("#studies", DataTable).update_cell(
                name, "mark", Text("✓", style="bold") if name in self.marked else ""
            )

    def action_compare(self) -> None:
        self.qapp.open_compare([o.name for o in self.overviews if o.name in self.marked])

    def action_sort(self) -> None:
        keys = list(SORTS)
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.sort_reverse = False
        self._fill()

    def action_reload(self) -> None:
        self.load()

    def action_start(self) -> None:
        self.qapp.start_study_dialog()

    def action_stop(self) -> None:
        name = self._current()
        run = self.qapp.runs.for_study(name) if name else None
        run = run or (self.qapp.runs.active[-1] if self.qapp.runs.active else None)
        if run is None:
            self.notify("no study started here is running", severity="warning")
            return
        run.stop()
        self.notify(f"stopping {run.study!r} (the running trial is recorded as interrupted)")
