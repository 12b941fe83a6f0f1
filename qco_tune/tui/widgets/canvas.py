"""Drawing a latency-against-memory scatter plot into rich ``Text`` lines. Pure: no textual here.

Points are one character each (so a click or a cursor maps to exactly one trial); the Pareto front
is joined with braille lines (2×4 dots per cell) drawn under the points; the budget is a vertical
line; failed trials, which have no latency, sit on a strip at the top at their predicted memory.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from rich.style import Style
from rich.text import Text

from qco_tune.core.units import format_size

GIB = 2**30
MARKERS = {"front": "●", "dominated": "•", "infeasible": "×", "failed": "✗", "running": "◌", "waiting": "◌"}
SERIES_MARKERS = ("●", "▲", "■", "◆")
RECIPE_MARKER = "◆"
_DRAW_ORDER = {"dominated": 0, "running": 1, "waiting": 1, "failed": 2, "infeasible": 3, "front": 4}
_BRAILLE = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
"""Dot bit of (sub-row, sub-column) inside one braille cell."""


@dataclass(frozen=True)
class PlotPoint:
    key: Hashable
    x: float
    """Peak memory in bytes."""
    y: float | None
    """Latency in seconds; None for a failed trial (drawn on the top strip)."""
    kind: str
    series: int = 0
    label: str | None = None


@dataclass(frozen=True)
class PlotStyles:
    kinds: Mapping[str, Style] = field(default_factory=dict)
    series: Sequence[Style] = ()
    axis: Style = field(default_factory=lambda: Style(dim=True))
    budget: Style = field(default_factory=lambda: Style(color="yellow"))
    line: Sequence[Style] = ()
    label: Style = field(default_factory=lambda: Style(italic=True))
    selected: Style = field(default_factory=lambda: Style(reverse=True, bold=True))


@dataclass
class PlotLayout:
    lines: list[Text]
    positions: dict[Hashable, tuple[int, int]]
    """Cell (column, row) of every drawn point."""

    def nearest(self, col: int, row: int, radius: float = 4.0) -> Hashable | None:
        """The point drawn nearest to a cell (cells are about twice as tall as wide)."""
        best, best_d = None, radius
        for key, (c, r) in self.positions.items():
            d = math.hypot(c - col, 2 * (r - row))
            if d <= best_d:
                best, best_d = key, d
        return best

    def step(self, key: Hashable | None, dx: int, dy: int) -> Hashable | None:
        """The next point from ``key`` in a direction (arrow keys); the first point when none is selected."""
        if not self.positions:
            return None
        if key not in self.positions:
            return min(self.positions, key=lambda k: (self.positions[k][0], self.positions[k][1]))
        c0, r0 = self.positions[key]
        best, best_d = None, math.inf
        for other, (c, r) in self.positions.items():
            if other == key or (c, r) == (c0, r0):
                continue
            along = (c - c0) * dx + (r - r0) * dy
            if along <= 0:
                continue
            across = abs((c - c0) * dy) + abs((r - r0) * dx)
            d = along + 3 * across
            if d < best_d:
                best, best_d = other, d
        return best if best is not None else key


def _ticks(lo: float, hi: float, count: int) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _log_ticks(lo: float, hi: float, count: int) -> list[float]:
    """Ticks at 1, 2, 5 × 10^k (as log10 values) between two log10 bounds, thinned to about ``count``."""
    ticks = [math.log10(m * 10**k) for k in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in (1, 2, 5)]
    inside = [t for t in ticks if lo <= t <= hi]
    stride = max(1, math.ceil(len(inside) / max(count, 1)))
    return inside[::stride]


def _fmt_s(v: float) -> str:
    return f"{v:.0f}s" if v >= 10 else f"{v:.1f}s" if v >= 1 else f"{v:.2f}s"


def _fmt_gib(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


class _Grid:
    def __init__(self, width: int, height: int) -> None:
        self.chars = [[" "] * width for _ in range(height)]
        self.styles: list[list[Style | None]] = [[None] * width for _ in range(height)]
        self.width, self.height = width, height

    def put(self, col: int, row: int, char: str, style: Style | None) -> None:
        if 0 <= col < self.width and 0 <= row < self.height:
            self.chars[row][col] = char
            self.styles[row][col] = style

    def text(self, col: int, row: int, text: str, style: Style | None) -> None:
        for i, ch in enumerate(text):
            self.put(col + i, row, ch, style)

    def free(self, col: int, row: int, length: int, *, over_lines: bool = False) -> bool:
        """Whether ``length`` cells from (col, row) are empty (or only lines, with ``over_lines``)."""
        if not 0 <= row < self.height:
            return False
        return all(
            0 <= col + i < self.width
            and (self.chars[row][col + i] == " " or (over_lines and _is_line(self.chars[row][col + i])))
            for i in range(length)
        )

    def lines(self) -> list[Text]:
        out = []
        for chars, styles in zip(self.chars, self.styles, strict=True):
            line = Text(no_wrap=True, overflow="crop")
            for ch, st in zip(chars, styles, strict=True):
                line.append(ch, st)
            out.append(line)
        return out


def draw_scatter(
    points: Sequence[PlotPoint],
    width: int,
    height: int,
    *,
    budget: float | None = None,
    fronts: Sequence[Sequence[Hashable]] = (),
    selected: Hashable | None = None,
    styles: PlotStyles | None = None,
    log_y: bool = False,
    series_markers: bool = False,
    x_unit: str = "peak memory",
) -> PlotLayout:
    """Lay out and draw the plot in ``width`` × ``height`` cells; ``x_unit`` names what the x axis counts
    (``host RAM``, ``VRAM (device)``), written with its unit (GiB) at the axis' right end."""
    styles = styles or PlotStyles()
    grid = _Grid(width, height)
    measured = [p for p in points if p.y is not None and p.y > 0]
    strip = any(p.y is None for p in points)
    if width < 24 or height < 6:
        grid.text(0, 0, "enlarge" if width < 20 else "plot: enlarge the window", styles.axis)
        return PlotLayout(grid.lines(), {})
    if not measured and not strip:
        grid.text(2, height // 2, "no measured trial yet", styles.axis)
        return PlotLayout(grid.lines(), {})
    ys = [p.y for p in measured if p.y is not None] or [1.0]
    y_lo, y_hi = min(ys), max(ys)
    if log_y:
        y_lo, y_hi = math.log10(y_lo), math.log10(y_hi)
    pad = (y_hi - y_lo) * 0.08 or 0.5
    y_lo, y_hi = y_lo - pad, y_hi + pad
    if not log_y:
        y_lo = max(0.0, y_lo)
    x_hi = max([p.x for p in points] + [budget or 0.0]) * 1.06 or GIB
    x_lo = 0.0
    label_w = 7
    left = label_w + 1
    cols = width - left - 1
    top = 1 if strip else 0
    rows = height - 2 - top

    def to_col(x: float) -> int:
        return left + round((x - x_lo) / (x_hi - x_lo) * (cols - 1))

    def to_row(y: float) -> int:
        v = math.log10(y) if log_y else y
        return top + (rows - 1) - round((v - y_lo) / (y_hi - y_lo) * (rows - 1))

    # axes and ticks
    axis_row = height - 2
    for r in range(height - 2):
        grid.put(left - 1, r, "│", styles.axis)
    grid.put(left - 1, axis_row, "└", styles.axis)
    for c in range(left, width):
        grid.put(c, axis_row, "─", styles.axis)
    for t in _log_ticks(y_lo, y_hi, max(2, rows // 3)) if log_y else _ticks(y_lo, y_hi, max(2, rows // 3)):
        r = top + (rows - 1) - round((t - y_lo) / (y_hi - y_lo) * (rows - 1))
        if top <= r < top + rows:
            text = _fmt_s(10**t if log_y else t)
            grid.text(left - 1 - len(text), r, text, styles.axis)
            grid.put(left - 1, r, "┤", styles.axis)
    if strip:
        grid.text(left - 1 - 5, 0, "fail", styles.kinds.get("failed", styles.axis))
        grid.put(left - 1, 0, "┤", styles.axis)
    # The axes' titles and units first, so that tick labels give way to them.
    unit = f"GiB {x_unit}" if cols > len(x_unit) + 24 else "GiB"
    grid.text(width - len(unit), axis_row + 1, unit, styles.axis)
    grid.text(0, axis_row + 1, "s/call", styles.axis)
    gib_ticks = _ticks(x_lo / GIB, x_hi / GIB, max(2, cols // 10))
    for t in gib_ticks:
        c = to_col(t * GIB)
        if left <= c < width:
            grid.put(c, axis_row, "┬", styles.axis)
            text = _fmt_gib(t)
            if grid.free(c - len(text) // 2, axis_row + 1, len(text) + 1):  # + a gap before the unit
                grid.text(c - len(text) // 2, axis_row + 1, text, styles.axis)

    positions = {p.key: (to_col(p.x), to_row(p.y) if p.y is not None and p.y > 0 else 0) for p in points}
    # front lines (braille, under everything else)
    dots: dict[tuple[int, int], int] = {}
    line_style: dict[tuple[int, int], Style] = {}
    for index, front in enumerate(fronts):
        front_style = styles.line[index % len(styles.line)] if styles.line else styles.axis
        cells = [positions[k] for k in front if k in positions]
        for (c0, r0), (c1, r1) in itertools.pairwise(cells):
            _braille_line(dots, line_style, front_style, c0 * 2 + 1, r0 * 4 + 2, c1 * 2 + 1, r1 * 4 + 2)
    for (c, r), bits in dots.items():
        if left <= c < width and top <= r < top + rows:
            grid.put(c, r, chr(0x2800 + bits), line_style[(c, r)])
    # budget line
    if budget:
        bc = to_col(budget)
        for r in range(height - 2):
            if grid.chars[r][bc] == " " or 0x2800 <= ord(grid.chars[r][bc]) <= 0x28FF:
                grid.put(bc, r, "┊", styles.budget)
        label = f"budget {format_size(budget)}"
        if grid.free(bc + 1, top, len(label)):
            grid.text(bc + 1, top, label, styles.budget)
        elif bc - len(label) >= left:
            grid.text(bc - len(label), top, label, styles.budget)
    # points
    ordered = sorted(points, key=lambda p: (p.label is not None, _DRAW_ORDER.get(p.kind, 0), p.key == selected))
    for p in ordered:
        c, r = positions[p.key]
        style: Style | None = styles.kinds.get(p.kind)
        if series_markers:
            base = styles.series[p.series % len(styles.series)] if styles.series else Style()
            style = base + Style(dim=True) if p.kind == "dominated" else base
            char = (
                SERIES_MARKERS[p.series % len(SERIES_MARKERS)]
                if p.kind in ("front", "dominated")
                else MARKERS.get(p.kind, "?")
            )
        else:
            char = RECIPE_MARKER if p.label else MARKERS.get(p.kind, "?")
        if p.key == selected:
            style = (style or Style()) + styles.selected
        grid.put(c, r, char, style)
    for p in ordered:
        if p.label:
            c, r = positions[p.key]
            text = p.label[:18]
            for soft in (False, True):
                if grid.free(c + 2, r, len(text), over_lines=soft):
                    grid.text(c + 2, r, text, styles.label)
                    break
                if c - 1 - len(text) >= left and grid.free(c - 1 - len(text), r, len(text), over_lines=soft):
                    grid.text(c - 1 - len(text), r, text, styles.label)
                    break
    return PlotLayout(grid.lines(), positions)


def _is_line(char: str) -> bool:
    return char == "┊" or 0x2800 <= ord(char) <= 0x28FF


def _braille_line(
    dots: dict[tuple[int, int], int],
    owner: dict[tuple[int, int], Style],
    style: Style,
    x0: int,
    y0: int,
    x1: int,
    y1: int,
) -> None:
    """Bresenham between two dot coordinates (2 dots per column, 4 per row)."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        cell = (x0 // 2, y0 // 4)
        dots[cell] = dots.get(cell, 0) | _BRAILLE[y0 % 4][x0 % 2]
        owner.setdefault(cell, style)
        if x0 == x1 and y0 == y1:
            return
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy
