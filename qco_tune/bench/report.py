"""The benchmark's result as a table and as a small self-written SVG line chart (no plotting dependency)."""

from __future__ import annotations

import statistics

from qco_tune.bench.search import TARGET, BenchResult, feasible_points
from qco_tune.core.units import format_size
from qco_tune.search.frontier import Point


def format_table(result: BenchResult) -> str:
    """The per-sampler summary as an aligned text table."""
    total = result.grid_seconds
    seeds = len(result.samplers[0].replays) if result.samplers else 0
    lines = [
        f"grid: {len(result.grid.records)} configurations, {total:,.0f} GPU s to measure them all; "
        f"budget {format_size(result.budget)}; {seeds} seed(s)",
        f"reference point: {result.reference[0]:.4g} s, {format_size(result.reference[1])}; "
        f"front of the whole grid: {len(_front(result))} configuration(s)",
        *([f"note: {result.grid.note}"] if result.grid.note else []),
        "",
        f"{'sampler':16s} {'GPU s to 95%':>13s} {'% of grid':>9s} {'seeds':>6s} {'to 100%':>9s} "
        f"{'HV@10%':>7s} {'HV@20%':>7s} {'HV@50%':>7s} {'trials':>7s}",
    ]
    for s in result.samplers:
        to95 = s.median_seconds_to(TARGET)
        to100 = s.median_seconds_to(1.0)
        reached = sum(v is not None for v in s.seconds_to(TARGET))
        trials = statistics.median(r.trials for r in s.replays)
        lines.append(
            f"{s.name:16s} {_num(to95):>13s} {_pct(to95, total):>9s} {f'{reached}/{len(s.replays)}':>6s} "
            f"{_num(to100):>9s} {s.mean_fraction_at(0.1 * total):>7.0%} {s.mean_fraction_at(0.2 * total):>7.0%} "
            f"{s.mean_fraction_at(0.5 * total):>7.0%} {trials:>7.0f}"
        )
    lines += [
        "",
        "GPU s to 95%: median over seeds of the recorded seconds spent until the feasible front's hypervolume",
        "reached 95% of the whole grid's; HV@x%: mean fraction of that hypervolume after x% of the grid's",
        "seconds; trials: median trials measured until the whole front was found (or the grid was spent).",
    ]
    return "\n".join(lines)


def _front(result: BenchResult) -> list[Point]:
    from qco_tune.search.frontier import pareto_points

    return pareto_points(feasible_points(result.grid, result.budget))


def _num(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f}"


def _pct(value: float | None, total: float) -> str:
    return "-" if value is None or total <= 0 else f"{value / total:.0%}"


COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def render_svg(result: BenchResult, width: int = 720, height: int = 420) -> str:
    """Mean hypervolume fraction against GPU seconds, one line per sampler, with the 95 % level dashed."""
    left, right, top, bottom = 64, 170, 36, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    total = max(result.grid_seconds, 1e-9)

    def x(spent: float) -> float:
        return left + plot_w * min(spent, total) / total

    def y(fraction: float) -> float:
        return top + plot_h * (1 - fraction)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14">Feasible-front hypervolume vs GPU seconds '
        f"(mean of {len(result.samplers[0].replays) if result.samplers else 0} seeds)</text>",
    ]
    for i in range(6):  # grid lines and ticks
        fraction = i / 5
        out.append(
            f'<line x1="{left}" y1="{y(fraction):.1f}" x2="{left + plot_w}" y2="{y(fraction):.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 6}" y="{y(fraction) + 4:.1f}" text-anchor="end">{fraction:.0%}</text>')
        spent = total * i / 5
        out.append(f'<line x1="{x(spent):.1f}" y1="{top}" x2="{x(spent):.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{x(spent):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{spent:,.0f}</text>')
    out.append(
        f'<line x1="{left}" y1="{y(TARGET):.1f}" x2="{left + plot_w}" y2="{y(TARGET):.1f}" stroke="#888" '
        'stroke-dasharray="5,4"/>'
    )
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">GPU seconds spent '
        f"(the whole grid: {total:,.0f} s)</text>"
    )
    out.append(
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 16 {top + plot_h / 2})">'
        "hypervolume / whole grid's</text>"
    )
    steps = 200
    for index, sampler in enumerate(result.samplers):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(
            f"{x(total * k / steps):.1f},{y(sampler.mean_fraction_at(total * k / steps)):.1f}" for k in range(steps + 1)
        )
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + 14 + 18 * index
        out.append(
            f'<line x1="{left + plot_w + 12}" y1="{ly}" x2="{left + plot_w + 32}" y2="{ly}" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        out.append(f'<text x="{left + plot_w + 38}" y="{ly + 4}">{_xml(sampler.name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
