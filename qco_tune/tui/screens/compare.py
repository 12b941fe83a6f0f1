"""The compare screen: two or more studies on one plot, and their matching configurations side by side."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from qco_tune.core.units import format_size
from qco_tune.search.compare import ComparedConfig, Comparison, compare_summaries
from qco_tune.store.studydata import DataError, StudyData
from qco_tune.tui.widgets.canvas import SERIES_MARKERS, PlotPoint
from qco_tune.tui.widgets.scatter import ScatterPlot

if TYPE_CHECKING:
    from qco_tune.tui.app import QcoTuneApp


def compare_points(comparison: Comparison) -> tuple[list[PlotPoint], list[list[Hashable]]]:
    """Every measured trial of every study, keyed (study index, trial number); one front line per study."""
    points: list[PlotPoint] = []
    fronts: list[list[Hashable]] = []
    for i, summary in enumerate(comparison.summaries):
        for row in summary.rows:
            if (
                (row.feasible or row.category == "infeasible")
                and row.latency_s is not None
                and row.memory_bytes is not None
            ):
                points.append(PlotPoint((i, row.number), row.memory_bytes, row.latency_s, row.category, series=i))
        fronts.append([(i, r.number) for r in sorted(summary.front, key=lambda r: r.memory_bytes or 0)])
    return points, fronts


def _cell(c: ComparedConfig, i: int) -> Text:
    row = c.rows[i]
    if row is None:
        return Text("not run", style="dim")
    if row.category == "failed":
        return Text("failed", style="red")
    latency = f"{row.latency_s:.2f}s" if row.latency_s is not None else "-"
    text = Text(f"{latency} {format_size(row.memory_bytes)}")
    if row.category == "front":
        text.stylize("bold green")
    elif row.category == "infeasible":
        text.stylize("red")
    return text


class CompareScreen(Screen[None]):
    """Studies overlaid; configurations matched by their canonical key."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "reload", "Reload", show=False),
    ]

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names
        self.comparison: Comparison | None = None
        self._rows: list[ComparedConfig] = []

    @property
    def qapp(self) -> QcoTuneApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text("loading…", style="dim"), id="compare-info", classes="info")
        with Container(id="body"):
            yield ScatterPlot(series_markers=True, id="plot")
            yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "compare " + " · ".join(self.names)
        self.query_one("#plot", ScatterPlot).border_title = "latency in s per call vs peak memory in GiB"
        self.load()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= 140, "-wide")

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def load(self) -> None:
        reader = self.qapp.reader
        if reader is None:
            return
        try:
            studies: list[StudyData] = [reader.load_study(n) for n in self.names]
            comparison = compare_summaries([(d.name, d.summary) for d in studies])
        except (DataError, ValueError) as exc:
            self.app.call_from_thread(self._error, str(exc))
            return
        self.app.call_from_thread(self._show, comparison, studies)

    def _error(self, message: str) -> None:
        self.query_one("#compare-info", Static).update(Text(message, style="bold red"))

    def _show(self, comparison: Comparison, studies: list[StudyData]) -> None:
        self.comparison = comparison
        plot = self.query_one("#plot", ScatterPlot)
        points, fronts = compare_points(comparison)
        latencies = [p.y for p in points if p.y]
        if latencies and max(latencies) / min(latencies) > 8:
            plot.log_y = True
        budgets = {d.overview.budget_bytes for d in studies}
        counted = {d.overview.counted_memory for d in studies}
        x_unit = f"peak {counted.pop()}" if len(counted) == 1 else "peak memory"
        plot.set_data(points, budget=budgets.pop() if len(budgets) == 1 else None, fronts=fronts, x_unit=x_unit)
        plot.border_title = f"latency in s per call vs {x_unit} in GiB"
        plot.legend = "  ".join(f"{SERIES_MARKERS[i % len(SERIES_MARKERS)]} {d.name}" for i, d in enumerate(studies))
        info = Text()
        for i, d in enumerate(studies):
            info.append(f"{SERIES_MARKERS[i % len(SERIES_MARKERS)]} {d.name}", "bold")
            info.append(f" ({d.overview.gpu})  ")
        info.append(f"· {len(comparison.matched)} configurations measured in all")
        for i in range(1, len(studies)):
            median = comparison.median_speedup(i)
            if median:
                info.append(f" · {studies[i].name} {median:.2f}× vs {studies[0].name} (median)")
        self.query_one("#compare-info", Static).update(info)
        self._fill(comparison)

    def _fill(self, comparison: Comparison) -> None:
        table = self.query_one("#compare-table", DataTable)
        table.clear(columns=True)
        for i, name in enumerate(comparison.studies):
            table.add_column(f"{SERIES_MARKERS[i % len(SERIES_MARKERS)]} {name}", key=f"s{i}")
        for i in range(1, len(comparison.studies)):
            table.add_column(f"speed-up {i + 1}/1", key=f"x{i}")
        table.add_column("front in", key="front")
        table.add_column("configuration", key="config")
        self._rows = list(comparison.configs)
        rows: list[list[Any]] = []
        for c in self._rows:
            cells: list[Any] = [_cell(c, i) for i in range(len(comparison.studies))]
            for i in range(1, len(comparison.studies)):
                s = c.speedup(i)
                cells.append(Text(f"{s:.2f}×" if s else "-", justify="right"))
            front = [SERIES_MARKERS[i % len(SERIES_MARKERS)] for i in range(len(comparison.studies)) if c.on_front(i)]
            cells.append(" ".join(front))
            cells.append(Text(c.config.describe() + (f"  ◆ {c.baseline}" if c.baseline else "")))
            rows.append(cells)
        table.add_rows(rows)

    @on(DataTable.RowHighlighted, "#compare-table")
    def _highlight(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self._rows):
            c = self._rows[event.cursor_row]
            keys = [(i, r.number) for i, r in enumerate(c.rows) if r is not None]
            plot = self.query_one("#plot", ScatterPlot)
            if plot.selected not in keys:
                plot.selected = keys[0] if keys else None

    @on(ScatterPlot.PointSelected)
    def _point(self, event: ScatterPlot.PointSelected) -> None:
        if not isinstance(event.key, tuple):
            return
        study, number = event.key
        for index, c in enumerate(self._rows):
            row = c.rows[study]
            if row is not None and row.number == number:
                self.query_one("#compare-table", DataTable).move_cursor(row=index, animate=False)
                break

    def action_reload(self) -> None:
        self.load()
