"""The latency-against-memory plot widget: mouse and arrow keys select a point, selection is linked outward."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar

from rich.console import RenderableType
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from qco_tune.tui.widgets.canvas import PlotLayout, PlotPoint, PlotStyles, draw_scatter


class ScatterPlot(Widget, can_focus=True):
    """Points of trials; the feasible front joined; the budget as a line. Posts ``PointSelected``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "step(-1, 0)", "←", show=False),
        Binding("right", "step(1, 0)", "→", show=False),
        Binding("up", "step(0, -1)", "↑", show=False),
        Binding("down", "step(0, 1)", "↓", show=False),
        Binding("l", "toggle_log", "Log scale"),
    ]

    DEFAULT_CSS = """
    ScatterPlot { height: 1fr; min-height: 8; }
    """

    selected: reactive[Hashable | None] = reactive(None)
    log_y: reactive[bool] = reactive(False)

    class PointSelected(Message):
        """The user picked a point (click or arrow key)."""

        def __init__(self, plot: ScatterPlot, key: Hashable) -> None:
            super().__init__()
            self.plot = plot
            self.key = key

        @property
        def control(self) -> ScatterPlot:
            return self.plot

    def __init__(self, *, series_markers: bool = False, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._points: Sequence[PlotPoint] = ()
        self._fronts: Sequence[Sequence[Hashable]] = ()
        self._budget: float | None = None
        self._layout: PlotLayout | None = None
        self._series_markers = series_markers
        self._x_unit = "peak memory"
        self.legend = ""

    def set_data(
        self,
        points: Sequence[PlotPoint],
        *,
        budget: float | None,
        fronts: Sequence[Sequence[Hashable]] = (),
        x_unit: str = "peak memory",
    ) -> None:
        """``x_unit``: what the x axis counts (``peak host RAM`` on a CPU study), written beside its GiB."""
        self._points, self._budget, self._fronts, self._x_unit = points, budget, fronts, x_unit
        self._layout = None
        self.refresh()

    @property
    def point_keys(self) -> set[Hashable]:
        return {p.key for p in self._points}

    # -- drawing ------------------------------------------------------------------------------
    def _styles(self) -> PlotStyles:
        theme = self.app.current_theme
        error = theme.error or "red"
        warning = theme.warning or "yellow"
        success = theme.success or "green"
        series = [theme.primary, theme.accent or "magenta", warning, success]
        return PlotStyles(
            kinds={
                "front": Style(color=success, bold=True),
                "dominated": Style(dim=True),
                "infeasible": Style(color=error),
                "failed": Style(color=error, bold=True),
                "running": Style(color=theme.primary),
            },
            series=[Style(color=c) for c in series],
            budget=Style(color=warning),
            line=[Style(color=success)] if not self._series_markers else [Style(color=c) for c in series],
            label=Style(color=theme.accent or "magenta", italic=True),
        )

    def render(self) -> RenderableType:
        width, height = self.content_size.width, self.content_size.height
        self._layout = draw_scatter(
            self._points,
            width,
            height,
            budget=self._budget,
            fronts=self._fronts,
            selected=self.selected,
            styles=self._styles(),
            log_y=self.log_y,
            series_markers=self._series_markers,
            x_unit=self._x_unit,
        )
        return Text("\n").join(self._layout.lines)

    def watch_selected(self) -> None:
        self.refresh()

    def watch_log_y(self) -> None:
        self.border_subtitle = self.legend + ("  · log scale" if self.log_y else "")
        self.refresh()

    @property
    def legend(self) -> str:
        return self._legend

    @legend.setter
    def legend(self, text: str) -> None:
        self._legend = text
        self.border_subtitle = text + ("  · log scale" if self.log_y else "")

    # -- input --------------------------------------------------------------------------------
    def _pick(self, key: Hashable | None) -> None:
        if key is not None:
            self.selected = key
            self.post_message(self.PointSelected(self, key))

    def on_click(self, event: events.Click) -> None:
        if self._layout is None:
            return
        offset = event.get_content_offset(self)
        if offset is not None:
            self._pick(self._layout.nearest(offset.x, offset.y))

    def action_step(self, dx: int, dy: int) -> None:
        if self._layout is not None:
            self._pick(self._layout.step(self.selected, dx, dy))

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
