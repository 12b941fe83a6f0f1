"""The trials table: sortable (click a header, or ``s``), filtered by a ``TrialFilter``, linked to the plot.

A virtual table (Textual's line API): only the rows on screen are rendered, so a study of 10,000
trials fills it in milliseconds where ``DataTable`` measures every cell. Columns that do not fit a
narrow terminal are dropped in a fixed order; the configuration takes the remaining width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from qco_tune.core.units import format_size
from qco_tune.search.pareto import TrialRow
from qco_tune.tui.filters import TrialFilter

CATEGORY_LABELS = {
    "front": ("● front", "success", True),
    "dominated": ("• feasible", "", False),
    "infeasible": ("× over budget", "error", False),
    "failed": ("✗ failed", "error", True),
    "skipped": ("- skipped", "", False),
    "running": ("◌ running", "primary", True),
    "waiting": ("◌ waiting", "", False),
}
_CATEGORY_ORDER = {k: i for i, k in enumerate(CATEGORY_LABELS)}


def _num(value: float | None) -> float:
    return value if value is not None else float("inf")


def _s(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f} s" if value is not None else "-"


def _memory(r: TrialRow) -> str:
    if r.memory_bytes is not None:
        return format_size(r.memory_bytes)
    return f"~{format_size(r.predicted_bytes)}" if r.predicted_bytes is not None else "-"


class Column:
    def __init__(
        self,
        key: str,
        label: str,
        width: int,
        sort: Callable[[TrialRow], Any],
        text: Callable[[TrialRow], str],
        right: bool = False,
    ) -> None:
        self.key, self.label, self.width, self.sort, self.text, self.right = key, label, width, sort, text, right


COLUMNS: tuple[Column, ...] = (
    Column("number", "#", 5, lambda r: r.number, lambda r: str(r.number), right=True),
    Column("state", "state", 13, lambda r: (_CATEGORY_ORDER.get(r.category, 99), _num(r.latency_s)), lambda r: ""),
    Column("latency", "latency", 9, lambda r: _num(r.latency_s), lambda r: _s(r.latency_s), right=True),
    Column(
        "spread",
        "±",
        6,
        lambda r: _num(r.measurement.latency_spread_s if r.measurement else None),
        lambda r: (
            f"±{r.measurement.latency_spread_s:.2f}"
            if r.measurement and r.measurement.latency_spread_s is not None
            else ""
        ),
        right=True,
    ),
    Column(
        "memory",
        "peak mem",
        10,
        lambda r: _num(r.memory_bytes if r.memory_bytes is not None else r.predicted_bytes),
        _memory,
        right=True,
    ),
    Column(
        "cold",
        "cold start",
        10,
        lambda r: _num(r.measurement.first_call_s if r.measurement else None),
        lambda r: _s(r.measurement.first_call_s if r.measurement else None, 1),
        right=True,
    ),
    Column("recipe", "recipe", 18, lambda r: r.baseline or "~", lambda r: r.baseline or ""),
    Column(
        "config",
        "configuration",
        0,
        lambda r: r.config.describe() if r.config else "~",
        lambda r: r.config.describe() if r.config else "? (no configuration recorded)",
    ),
)
SORT_KEYS = {c.key: c.sort for c in COLUMNS}
DROP_ORDER = ("cold", "spread", "recipe")
"""Columns left out, in this order, when the terminal is too narrow."""
MIN_CONFIG = 24


class TrialsTable(ScrollView, can_focus=True):
    """Trials of one study; the header stays on the first line."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "trials-table--header",
        "trials-table--cursor",
        "trials-table--even-row",
    }

    DEFAULT_CSS = """
    TrialsTable {
        height: 1fr;
        background: $surface;
        color: $foreground;
        & > .trials-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .trials-table--even-row { background: $surface-lighten-1 50%; }
        & > .trials-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .trials-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        &:dark > .trials-table--even-row { background: $surface-darken-1 40%; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(-1)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
        Binding("enter", "choose", "Trial"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, always_update=False)

    class TrialHighlighted(Message):
        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    class TrialChosen(Message):
        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._all: Sequence[TrialRow] = ()
        self.filter = TrialFilter()
        self.sort_key = "state"
        """Front first, fastest first: the answer to "what should I use" on top."""
        self.sort_reverse = False
        self.shown: list[TrialRow] = []
        self._index: dict[int, int] = {}
        self._quiet = False
        self.partial = False

    # -- data -----------------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self.shown)

    def set_rows(self, rows: Sequence[TrialRow], keep: int | None = None, *, partial: bool = False) -> None:
        """Show ``rows`` (filtered and sorted); keep the cursor on trial ``keep`` when it is still shown.

        ``partial``: the rows have no configuration or measurement yet (shown as "…", not as missing).
        """
        self._all = rows
        self.partial = partial
        self._rebuild(keep)

    def set_filter(self, trial_filter: TrialFilter) -> None:
        self.filter = trial_filter
        self._rebuild(self.current_number)

    def _rebuild(self, keep: int | None) -> None:
        func = SORT_KEYS[self.sort_key]
        shown = [r for r in self._all if self.filter.matches(r)]
        shown.sort(key=lambda r: (func(r), r.number), reverse=self.sort_reverse)
        self.shown = shown
        self._index = {r.number: i for i, r in enumerate(shown)}
        self.virtual_size = Size(self.size.width, len(shown) + 1)
        self._quiet = True
        if keep is None or not self.select_number(keep):
            self.cursor_row = min(self.cursor_row, max(0, len(shown) - 1))
        self._quiet = False
        self.refresh()

    @property
    def current_number(self) -> int | None:
        if not self.shown or not 0 <= self.cursor_row < len(self.shown):
            return None
        return self.shown[self.cursor_row].number

    def select_number(self, number: int) -> bool:
        """Move the cursor to trial ``number``; False when the filter hides it."""
        index = self._index.get(number)
        if index is None:
            return False
        self.cursor_row = index
        return True

    def watch_cursor_row(self, old: int, new: int) -> None:
        self._scroll_to_cursor()
        self.refresh()
        number = self.current_number
        if number is not None and not self._quiet:
            self.post_message(self.TrialHighlighted(number))

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    # -- layout and drawing -----------------------------------------------------------------------
    def _columns(self, width: int) -> list[tuple[Column, int]]:
        dropped: set[str] = set()
        fixed = [c for c in COLUMNS if c.key != "config"]

        def used() -> int:
            return sum(c.width + 1 for c in fixed if c.key not in dropped)

        for key in DROP_ORDER:
            if width - used() >= MIN_CONFIG:
                break
            dropped.add(key)
        layout = [(c, c.width) for c in fixed if c.key not in dropped]
        layout.append((COLUMNS[-1], max(8, width - used())))
        return layout

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.shown) + 1)

    def _styles(self) -> dict[str, Style]:
        variables = self.app.theme_variables
        return {
            name: Style(color=variables.get(name)) if variables.get(name) else Style()
            for name in ("success", "error", "primary", "accent")
        }

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        columns = self._columns(width)
        if y == 0:
            return self._header(columns, width)
        index = round(self.scroll_y) + y - 1
        if index >= len(self.shown):
            return Strip.blank(width)
        row = self.shown[index]
        text = self._row_text(row, columns)
        base = self.rich_style
        if index == self.cursor_row:
            base = base + self.get_component_rich_style("trials-table--cursor")
        elif index % 2:
            base = base + self.get_component_rich_style("trials-table--even-row")
        text.stylize_before(base)
        segments = list(text.render(self.app.console))
        return Strip(segments).crop_extend(0, width, base)

    def _header(self, columns: list[tuple[Column, int]], width: int) -> Strip:
        style = self.rich_style + self.get_component_rich_style("trials-table--header")
        text = Text(style=style)
        for column, w in columns:
            label = column.label + ((" ▼" if self.sort_reverse else " ▲") if column.key == self.sort_key else "")
            text.append((label.rjust(w) if column.right else label.ljust(w))[:w] + " ")
        segments = list(text.render(self.app.console))
        return Strip(segments).crop_extend(0, width, style)

    def _row_text(self, row: TrialRow, columns: list[tuple[Column, int]]) -> Text:
        styles = self._styles()
        text = Text(no_wrap=True, overflow="ellipsis")
        for column, w in columns:
            if column.key == "state":
                label, color, bold = CATEGORY_LABELS.get(row.category, (row.category, "", False))
                style = styles.get(color, Style()) + Style(bold=bold, dim=row.category in ("dominated", "skipped"))
                text.append(label.ljust(w)[:w] + " ", style)
                continue
            value = "…" if self.partial and column.key in ("config", "spread", "cold") else column.text(row)
            if len(value) > w and column.key != "config":
                value = value[: w - 1] + "…"
            cell = value.rjust(w) if column.right else value.ljust(w)
            style = styles["accent"] + Style(italic=True) if column.key == "recipe" else Style()
            text.append((cell if column.key != "config" else value[:w]) + " ", style)
        return text

    # -- input ------------------------------------------------------------------------------------
    def action_move(self, delta: int) -> None:
        if self.shown:
            self.cursor_row = max(0, min(len(self.shown) - 1, self.cursor_row + delta))

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.size.height - 2))

    def action_edge(self, direction: int) -> None:
        if self.shown:
            self.cursor_row = 0 if direction < 0 else len(self.shown) - 1

    def action_choose(self) -> None:
        number = self.current_number
        if number is not None:
            self.post_message(self.TrialChosen(number))

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.sort_reverse if key == self.sort_key else False
        self.sort_key, self.sort_reverse = key, reverse
        self._rebuild(self.current_number)

    def action_cycle_sort(self) -> None:
        keys = [c.key for c in COLUMNS]
        self.sort_by(keys[(keys.index(self.sort_key) + 1) % len(keys)], reverse=False)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_key, reverse=not self.sort_reverse)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = 0
            for column, w in self._columns(self.size.width):
                if x <= offset.x < x + w + 1:
                    self.sort_by(column.key)
                    return
                x += w + 1
            return
        index = round(self.scroll_y) + offset.y - 1
        if 0 <= index < len(self.shown):
            self.cursor_row = index
            if event.chain >= 2:
                self.action_choose()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
