"""The trials table: sortable (click a header, or ``s``), filtered by a ``TrialFilter``, linked to the plot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from qco_tune.config import format_size
from qco_tune.pareto import TrialRow
from qco_tune.tui.filters import TrialFilter

CATEGORY_LABELS = {
    "front": ("● front", "bold $success"),
    "dominated": ("• feasible", "dim"),
    "infeasible": ("× over budget", "$error"),
    "failed": ("✗ failed", "bold $error"),
    "skipped": ("- skipped", "dim italic"),
    "running": ("◌ running", "$primary"),
    "waiting": ("◌ waiting", "dim"),
}
_CATEGORY_ORDER = {k: i for i, k in enumerate(CATEGORY_LABELS)}


def _num(value: float | None) -> float:
    return value if value is not None else float("inf")


COLUMNS: tuple[tuple[str, str, Callable[[TrialRow], Any]], ...] = (
    ("number", "#", lambda r: r.number),
    ("state", "state", lambda r: _CATEGORY_ORDER.get(r.category, 99)),
    ("latency", "latency", lambda r: _num(r.latency_s)),
    ("spread", "±", lambda r: _num(r.measurement.latency_spread_s if r.measurement else None)),
    ("memory", "peak mem", lambda r: _num(r.memory_bytes if r.memory_bytes is not None else r.predicted_bytes)),
    ("cold", "cold start", lambda r: _num(r.measurement.first_call_s if r.measurement else None)),
    ("recipe", "recipe", lambda r: r.baseline or "~"),
    ("config", "configuration", lambda r: r.config.describe() if r.config else "~"),
)
SORT_KEYS = {key: func for key, _, func in COLUMNS}


def _s(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f} s" if value is not None else "-"


def row_cells(row: TrialRow, resolve: Callable[[str], str]) -> list[Any]:
    label, style = CATEGORY_LABELS.get(row.category, (row.category, ""))
    m = row.measurement
    memory = (
        format_size(row.memory_bytes)
        if row.memory_bytes is not None
        else (f"~{format_size(row.predicted_bytes)}" if row.predicted_bytes is not None else "-")
    )
    return [
        Text(str(row.number), justify="right"),
        Text(label, style=resolve(style)),
        Text(_s(row.latency_s), justify="right"),
        Text(f"±{m.latency_spread_s:.2f}" if m and m.latency_spread_s is not None else "", justify="right"),
        Text(memory, justify="right"),
        Text(_s(m.first_call_s if m else None, 1), justify="right"),
        Text(row.baseline or "", style=resolve("italic $accent")),
        Text(row.config.describe() if row.config else "? (no configuration recorded)"),
    ]


class TrialsTable(DataTable[Any]):
    """Trials of one study; row keys are trial numbers as text."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
    ]

    class TrialHighlighted(Message):
        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    class TrialChosen(Message):
        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._all: Sequence[TrialRow] = ()
        self.filter = TrialFilter()
        self.sort_key = "latency"
        self.sort_reverse = False
        self.shown: list[TrialRow] = []
        self._quiet = False

    def on_mount(self) -> None:
        for key, label, _ in COLUMNS:
            self.add_column(label, key=key)

    def _resolve(self, style: str) -> str:
        variables = self.app.theme_variables
        return " ".join(variables.get(w[1:], "") if w.startswith("$") else w for w in style.split())

    def set_rows(self, rows: Sequence[TrialRow], keep: int | None = None) -> None:
        """Show ``rows`` (filtered and sorted); keep the cursor on trial ``keep`` when it is still shown."""
        self._all = rows
        self._rebuild(keep)

    def set_filter(self, trial_filter: TrialFilter) -> None:
        self.filter = trial_filter
        self._rebuild(self.current_number)

    def _rebuild(self, keep: int | None) -> None:
        func = SORT_KEYS[self.sort_key]
        shown = [r for r in self._all if self.filter.matches(r)]
        shown.sort(key=lambda r: (func(r), r.number), reverse=self.sort_reverse)
        self.shown = shown
        self._quiet = True
        self.clear()
        cache: dict[str, str] = {}

        def resolve(style: str) -> str:
            return cache[style] if style in cache else cache.setdefault(style, self._resolve(style))

        for row in shown:
            self.add_row(*row_cells(row, resolve), key=str(row.number))
        self._mark_sorted()
        if keep is not None:
            self.select_number(keep)
        self._quiet = False

    def _mark_sorted(self) -> None:
        arrow = " ▼" if self.sort_reverse else " ▲"
        for key, label, _ in COLUMNS:
            column = self.columns.get(key)  # type: ignore[call-overload]
            if column is not None:
                column.label = Text(label + (arrow if key == self.sort_key else ""))

    @property
    def current_number(self) -> int | None:
        if not self.shown or self.cursor_row < 0 or self.cursor_row >= len(self.shown):
            return None
        return self.shown[self.cursor_row].number

    def select_number(self, number: int) -> bool:
        """Move the cursor to trial ``number``; False when the filter hides it."""
        try:
            index = self.get_row_index(str(number))
        except Exception:  # RowDoesNotExist
            return False
        if index != self.cursor_row:
            self.move_cursor(row=index, animate=False)
        return True

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.sort_reverse if key == self.sort_key else False
        self.sort_key, self.sort_reverse = key, reverse
        self._rebuild(self.current_number)

    def action_cycle_sort(self) -> None:
        keys = [k for k, _, _ in COLUMNS]
        self.sort_by(keys[(keys.index(self.sort_key) + 1) % len(keys)], reverse=False)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_key, reverse=not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        number = self.current_number
        if number is not None and not self._quiet:
            self.post_message(self.TrialHighlighted(number))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        number = self.current_number
        if number is not None:
            self.post_message(self.TrialChosen(number))
