"""The trial screen: configuration, every measurement, and for a failed trial its reason and output."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from qco_tune.core.units import format_size
from qco_tune.search.pareto import TrialRow, format_fidelity
from qco_tune.store.studydata import StudyData
from qco_tune.tui.widgets.trials_table import CATEGORY_LABELS

MISSING = "—"


def _s(value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f} s" if value is not None else MISSING


def _table(title: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None, pad_edge=False)
    table.add_column("what", style="dim", no_wrap=True)
    table.add_column("value")
    return table


def config_table(row: TrialRow) -> Table:
    table = _table("Configuration")
    if row.config is None:
        table.add_row("", Text("no configuration recorded (older version?)", style="yellow"))
        return table
    c = row.config.canonical()
    table.add_row("summary", Text(c.describe(), style="bold"))
    quant = ", ".join(f"{comp}: {backend}" for comp, backend in c.quantization) or "none (study dtype)"
    table.add_row("quantization", quant)
    table.add_row(
        "compile",
        c.compile
        + (f" · mode {c.compile_mode}" + (" · fullgraph" if c.fullgraph else "") if c.compile != "none" else ""),
    )
    offload: str = c.offload
    offload += "".join(f" · {comp}: {p}" for comp, p in c.placement)
    if "group_block" in c.placements():
        offload += f" · {c.blocks_per_group} block(s) per group"
    flags = [n for n in ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage") if getattr(c, n)]
    table.add_row("offload", offload + (" · " + ", ".join(flags) if flags else ""))
    settings = c.settings()
    if settings:
        table.add_row("settings", ", ".join(f"{k} {v}" if not isinstance(v, bool) else k for k, v in settings.items()))
    if row.baseline:
        table.add_row("seeded recipe", Text(row.baseline, style="italic"))
    return table


def measurement_table(row: TrialRow, data: StudyData) -> Table:
    table = _table("Measurements")
    m = row.measurement
    label = CATEGORY_LABELS.get(row.category, (row.category, "", False))[0]
    table.add_row("state", label + (f" ({m.status})" if m else ""))
    if m is None:
        table.add_row("", Text("no measurement recorded (older version, or never ran)", style="yellow"))
    spread = f" ± {m.latency_spread_s:.3f}" if m and m.latency_spread_s is not None else ""
    calls = (
        f"  ({len(m.latencies_s)} calls: {', '.join(f'{v:.3f}' for v in m.latencies_s)})" if m and m.latencies_s else ""
    )
    table.add_row("latency (median)", _s(row.latency_s) + spread + calls)
    if m is not None:
        table.add_row("per denoising step", _s(m.step_time_s, 4))
        table.add_row("cold start (first call)", _s(m.first_call_s, 1))
        table.add_row("load", _s(m.load_s, 1))
        table.add_row("VRAM, NVML (device)", format_size(m.peak_device_bytes))
        table.add_row("VRAM, allocator peak", format_size(m.peak_allocated_bytes))
        table.add_row("VRAM, allocator reserved", format_size(m.peak_reserved_bytes))
        table.add_row("host RAM peak", format_size(m.peak_host_bytes))
        table.add_row("device", m.device)
    budget = data.overview.budget_bytes
    counted = format_size(row.memory_bytes)
    if budget and row.memory_bytes is not None:
        share = row.memory_bytes / budget
        counted += f"  ({share:.0%} of the {format_size(budget)} budget, {data.overview.counted_memory})"
    table.add_row("peak counted against budget", counted)
    table.add_row("predicted before running", format_size(row.predicted_bytes) if row.predicted_bytes else MISSING)
    table.add_row("fidelity vs reference (PSNR · cos)", format_fidelity(m) or MISSING)
    times = data.times.get(row.number)
    if times is not None and times.start is not None:
        took = f" · took {times.duration_s:.0f} s" if times.duration_s is not None else ""
        table.add_row("started", f"{times.start:%Y-%m-%d %H:%M:%S}{took}")
    return table


def failure_panel(row: TrialRow) -> RenderableType | None:
    m = row.measurement
    if row.category not in ("failed", "skipped", "infeasible") and not row.reason:
        return None
    parts: list[RenderableType] = [Text("Why", style="bold")]
    parts.append(Text(row.reason or (m.reason if m else None) or "no reason recorded", style="red"))
    if m is not None and m.output_tail:
        parts.append(Text("\nOutput (last lines)", style="bold"))
        parts.append(Text(m.output_tail, style="dim"))
    return Group(*parts)


class TrialScreen(Screen[None]):
    """One trial in full; ← → step through trials, e exports."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "export", "Export"),
        Binding("left,k", "step(-1)", "Prev"),
        Binding("right,j", "step(1)", "Next"),
    ]

    def __init__(self, data: StudyData, number: int) -> None:
        super().__init__()
        self.data = data
        self.number = number

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="trial-body"):
            yield Static(id="trial-title", classes="info")
            yield Static(id="trial-config")
            yield Static(id="trial-measure")
            yield Static(id="trial-failure", classes="failure")
        yield Footer()

    def on_mount(self) -> None:
        self._show()

    def _show(self) -> None:
        row = self.data.row(self.number)
        self.title = f"{self.data.name} · trial {self.number}"
        if row is None:
            self.query_one("#trial-title", Static).update(
                Text(f"trial {self.number} is not in this study", style="red")
            )
            return
        title = Text.assemble((f"Trial {row.number}", "bold"), f" of {self.data.name}")
        if self.data.summary.best is not None and self.data.summary.best.number == row.number:
            title.append("  ★ fastest feasible", "bold green")
        self.query_one("#trial-title", Static).update(title)
        self.query_one("#trial-config", Static).update(config_table(row))
        self.query_one("#trial-measure", Static).update(measurement_table(row, self.data))
        failure = failure_panel(row)
        box = self.query_one("#trial-failure", Static)
        box.update(failure or "")
        box.set_class(failure is None, "hidden")

    def action_step(self, delta: int) -> None:
        numbers = [r.number for r in self.data.summary.rows]
        if self.number in numbers:
            index = (numbers.index(self.number) + delta) % len(numbers)
            self.number = numbers[index]
            self._show()

    def action_export(self) -> None:
        from qco_tune.tui.screens.export import ExportScreen

        self.app.push_screen(ExportScreen(self.data, self.number))
