"""The study screen: the latency/VRAM plot and the trials table, linked; follows a running study live."""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from qco_tune.core.units import format_size
from qco_tune.search.pareto import SPEEDUP_HEADER
from qco_tune.store.studydata import DataError, StudyData
from qco_tune.tui.filters import TrialFilter
from qco_tune.tui.widgets.canvas import PlotPoint
from qco_tune.tui.widgets.scatter import ScatterPlot
from qco_tune.tui.widgets.trials_table import TrialsTable

if TYPE_CHECKING:
    from qco_tune.tui.app import QcoTuneApp

WIDE = 140
"""From this many columns, plot and table sit side by side."""


def plot_points(data: StudyData, trial_filter: TrialFilter) -> list[PlotPoint]:
    """Points of the trials the filter keeps: measured ones at (memory, latency), failed ones on the top strip."""
    points = []
    for row in data.summary.rows:
        if not trial_filter.matches(row):
            continue
        if row.feasible or row.category == "infeasible":
            if row.latency_s is not None and row.memory_bytes is not None:
                points.append(PlotPoint(row.number, row.memory_bytes, row.latency_s, row.category, label=row.baseline))
        elif row.category == "failed" and row.predicted_bytes is not None:
            points.append(PlotPoint(row.number, row.predicted_bytes, None, "failed", label=row.baseline))
    return points


def front_line(data: StudyData) -> list[Hashable]:
    return [r.number for r in sorted(data.summary.front, key=lambda r: r.memory_bytes or 0)]


def info_line(data: StudyData) -> Text:
    o = data.overview
    c = o.counts
    text = Text()
    text.append(o.model, "bold")
    text.append(f" · {o.gpu} · ≤{format_size(o.budget_bytes)} {o.counted_memory} · ")
    text.append(f"{c.ran} ran: ")
    text.append(f"{c.feasible} ok ", "green")
    text.append(f"{c.infeasible} over ", "red" if c.infeasible else "dim")
    text.append(f"{c.failed} failed ", "red" if c.failed else "dim")
    text.append(f"· {c.skipped} skipped", "dim")
    if c.running:
        text.append(f" {c.running} running", "bold")
    text.append(" · ")
    if o.best_latency_s is not None:
        text.append(f"best {o.best_latency_s:.3f} s #{o.best_number} ", "bold green")
        if o.speedup:
            text.append(f" {SPEEDUP_HEADER}: {o.speedup.describe()}")
    elif not data.summary.rows:
        text.append("no trial yet", "yellow")
    else:
        text.append("no feasible trial yet", "yellow")
    if o.note:
        text.append(f" · {o.note}", "yellow")
    return text


class StudyScreen(Screen[None]):
    """One study: plot, filter and table; Enter opens a trial."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("enter", "detail", "Trial", show=False),
        Binding("e", "export", "Export"),
        Binding("t", "cycle_state", "State filter"),
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("p", "focus_plot", "Plot", show=False),
        Binding("r", "reload", "Reload", show=False),
        Binding("x", "stop", "Stop run", show=False),
        Binding("c", "compare", "Compare", show=False),
    ]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.study_name = name
        self.data: StudyData | None = None
        self.selected: int | None = None
        self.first_view_in: float | None = None
        """Seconds from mounting to the plot and table on screen (the open benchmark reads it)."""
        self.loaded_in: float | None = None
        """Seconds from mounting to everything on screen, configurations and measurements included."""
        self._mounted_at = 0.0
        self._checking = False

    @property
    def qapp(self) -> QcoTuneApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"{self.study_name}: loading…", style="dim"), id="info", classes="info")
        with Container(id="body"):
            yield ScatterPlot(id="plot")
            with Vertical(id="side"):
                yield Input(placeholder="filter: state:failed compile=regional quant=bnb_nf4 …  (/)", id="filter")
                yield TrialsTable(id="trials")
        yield Static(id="status", classes="status hidden")
        yield Footer()

    def on_mount(self) -> None:
        self.title = self.study_name
        self._mounted_at = time.perf_counter()
        plot = self.query_one("#plot", ScatterPlot)
        plot.border_title = "latency in s per call vs peak memory in GiB"
        plot.legend = "● front  • dominated  × over budget  ✗ failed  ◆ recipe"
        self.load()
        self.set_interval(self.qapp.poll_interval, self.poll)

    def on_resize(self) -> None:
        self.set_class(self.size.width >= WIDE, "-wide")

    # -- loading --------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="study", exit_on_error=False)
    def load(self) -> None:
        reader = self.qapp.reader
        if reader is None:
            self.app.call_from_thread(self._show_error, self.qapp.reader_error or "no storage")
            return
        try:
            if self.data is None:  # first open: the plot and the numbers first, then the rest
                partial = reader.load_study(self.study_name, partial=True)
                self.app.call_from_thread(self.apply, partial)
                if partial.partial and partial.summary.rows:
                    self.app.call_from_thread(self._show_status, "reading configurations and measurements…")
            data = reader.load_study(self.study_name)
        except DataError as exc:
            self.app.call_from_thread(self._show_error, str(exc))
            return
        self.app.call_from_thread(self.apply, data)

    @work(thread=True, exclusive=True, group="study-poll", exit_on_error=False)
    def _check(self) -> None:
        reader = self.qapp.reader
        if reader is None or self.data is None:
            return
        try:
            stamp = reader.stamps().get(self.study_name)
        except DataError as exc:
            self.app.call_from_thread(self._show_error, str(exc))
            return
        if stamp is None:
            self.app.call_from_thread(self._show_error, f"study {self.study_name!r} is no longer in the storage")
        elif stamp != self.data.overview.stamp:
            self.app.call_from_thread(self.load)
        else:
            self.app.call_from_thread(self._clear_error)

    def poll(self) -> None:
        if self.data is not None and self.is_current:
            self._check()

    def _show_error(self, message: str) -> None:
        status = self.query_one("#status", Static)
        status.update(Text(message, style="bold red"))
        status.remove_class("hidden")
        if self.data is None:
            self.query_one("#info", Static).update(Text(f"{self.study_name}: cannot read it", style="red"))

    def _show_status(self, message: str) -> None:
        status = self.query_one("#status", Static)
        status.update(Text(message, style="dim"))
        status.remove_class("hidden")

    def _clear_error(self) -> None:
        run = self.qapp.runs.for_study(self.study_name)
        status = self.query_one("#status", Static)
        if run is not None:
            status.update(Text(f"running here: pid {run.pid} · {run.elapsed():.0f} s · {run.tail()}"[:200]))
            status.remove_class("hidden")
        else:
            status.add_class("hidden")

    def apply(self, data: StudyData) -> None:
        """Show ``data``; the selected trial, the filter, the sort and the scroll stay as they were."""
        first = self.data is None
        self.data = data
        self.query_one("#info", Static).update(info_line(data))
        table = self.query_one("#trials", TrialsTable)
        keep = self.selected
        if first and keep is None and data.summary.best is not None:
            keep = data.summary.best.number
        table.set_rows(data.summary.rows, keep=keep, partial=data.partial)
        if first:
            latencies = [r.latency_s for r in data.summary.rows if r.latency_s and r.category != "skipped"]
            if latencies and max(latencies) / min(latencies) > 8:
                self.query_one("#plot", ScatterPlot).log_y = True
        self._refresh_plot()
        if keep is not None:
            self._select(keep)
        elif table.current_number is not None:
            self._select(table.current_number)
        if not data.partial:
            self._clear_error()
        if first:
            self.first_view_in = time.perf_counter() - self._mounted_at
            table.focus()
        if not data.partial and self.loaded_in is None:
            self.loaded_in = time.perf_counter() - self._mounted_at

    def _refresh_plot(self) -> None:
        if self.data is None:
            return
        plot = self.query_one("#plot", ScatterPlot)
        trial_filter = self.query_one("#trials", TrialsTable).filter
        o = self.data.overview
        plot.set_data(
            plot_points(self.data, trial_filter),
            budget=o.budget_bytes,
            fronts=[front_line(self.data)],
            x_unit=f"peak {o.counted_memory}",
        )
        plot.border_title = f"latency in s per call vs peak {o.counted_memory} in GiB"

    def _select(self, number: int) -> None:
        self.selected = number
        plot = self.query_one("#plot", ScatterPlot)
        plot.selected = number if number in plot.point_keys else None
        self.query_one("#trials", TrialsTable).select_number(number)

    # -- linking --------------------------------------------------------------------------------
    @on(ScatterPlot.PointSelected)
    def _point_selected(self, event: ScatterPlot.PointSelected) -> None:
        if isinstance(event.key, int):
            self._select(event.key)

    @on(TrialsTable.TrialHighlighted)
    def _row_highlighted(self, event: TrialsTable.TrialHighlighted) -> None:
        self.selected = event.number
        plot = self.query_one("#plot", ScatterPlot)
        plot.selected = event.number if event.number in plot.point_keys else None

    @on(TrialsTable.TrialChosen)
    def _row_chosen(self, event: TrialsTable.TrialChosen) -> None:
        self.selected = event.number
        self.action_detail()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        trial_filter = TrialFilter.parse(event.value)
        self.query_one("#trials", TrialsTable).set_filter(trial_filter)
        self._refresh_plot()
        if trial_filter.errors:
            self.notify(f"unknown state(s): {', '.join(trial_filter.errors)}", severity="warning")

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.query_one("#trials", TrialsTable).focus()

    # -- actions --------------------------------------------------------------------------------
    def action_back(self) -> None:
        if self.focused is self.query_one("#filter", Input):
            self.query_one("#trials", TrialsTable).focus()
        else:
            self.app.pop_screen()

    def _row(self) -> object | None:
        if self.data is None or self.selected is None:
            self.notify("select a trial first", severity="warning")
            return None
        if self.data.partial:
            self.notify("still reading the study: a moment", severity="warning")
            return None
        return self.data.row(self.selected)

    def action_detail(self) -> None:
        from qco_tune.tui.screens.trial import TrialScreen

        if self._row() is not None and self.data is not None and self.selected is not None:
            self.app.push_screen(TrialScreen(self.data, self.selected))

    def action_export(self) -> None:
        from qco_tune.tui.screens.export import ExportScreen

        if self._row() is not None and self.data is not None and self.selected is not None:
            self.app.push_screen(ExportScreen(self.data, self.selected))

    def action_cycle_state(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = TrialFilter.parse(box.value).next_state().text

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_plot(self) -> None:
        self.query_one("#plot", ScatterPlot).focus()

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="study-compare", exit_on_error=False)
    def action_compare(self) -> None:
        """Compare with every other study of the same model (typically the same spec on other GPUs)."""
        reader = self.qapp.reader
        if reader is None or self.data is None:
            return
        try:
            overviews = reader.list_studies()
        except DataError as exc:
            self.app.call_from_thread(self._show_error, str(exc))
            return
        model = self.data.overview.model
        others = [o.name for o in overviews if o.model == model and o.name != self.study_name]
        if not others:
            self.app.call_from_thread(self.notify, f"no other study of {model} to compare with", severity="warning")
            return
        self.app.call_from_thread(self.qapp.open_compare, [self.study_name, *others])

    def action_stop(self) -> None:
        run = self.qapp.runs.for_study(self.study_name)
        if run is None:
            self.notify("this study was not started from this window", severity="warning")
            return
        run.stop()
        self.notify(f"stopping {self.study_name!r}: the running trial is recorded as interrupted")

    def on_screen_resume(self) -> None:
        self.poll()
