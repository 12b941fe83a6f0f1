"""Text report of one stored study for ``qco-tune show``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from qco_tune.cli.console import print_speedup, report_console, seconds
from qco_tune.core.keys import CAPABILITIES_ATTR, GPU_ATTR, MODEL_ATTR, SPEC_ATTR
from qco_tune.core.records import Capabilities, ModelInfo
from qco_tune.core.units import format_size
from qco_tune.loop.summary import (
    MEASURED,
    compile_cache_starts,
    dumps,
    load_stored_study,
    relative,
    study_json,
)
from qco_tune.search.budget import study_counted_memory
from qco_tune.search.pareto import ParetoSummary, TrialRow, format_fidelity


def _latency(row: TrialRow) -> str:
    """The latency; ``~`` marks one extrapolated from fewer denoising steps."""
    from qco_tune.search.steps import is_extrapolated

    return ("~" if is_extrapolated(row.measurement) else "") + seconds(row.latency_s)


def _row_cells(row: TrialRow) -> list[str]:
    m = row.measurement
    return [
        str(row.number),
        row.config.describe() if row.config else "?",
        _latency(row),
        f"±{m.latency_spread_s:.3f}" if m and m.latency_spread_s is not None else "",
        seconds(m.step_time_s if m else None),
        format_size(row.memory_bytes),
        format_fidelity(m) or "-",
        seconds(m.first_call_s if m else None),
        row.baseline or "",
    ]


def _trial_table(title: str, rows: tuple[TrialRow, ...] | list[TrialRow]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    columns = ("#", "configuration", "latency", "spread", "s/step", "peak mem", "PSNR · cos", "cold start", "baseline")
    for name in columns:
        # Only the configuration wraps; numbers keep their width on a narrow terminal.
        table.add_column(name, no_wrap=name != "configuration", min_width=len(name) if name != "configuration" else 20)
    for row in rows:
        table.add_row(*_row_cells(row))
    return table


def print_study(name: str, url: str | None) -> None:
    """``qco-tune show``: the feasible Pareto front, baselines and everything that did not make it."""
    from qco_tune.loop.setup import load_summary

    study = load_stored_study(name, url)
    summary = load_summary(study)
    spec = study.user_attrs.get(SPEC_ATTR, {})
    console = report_console()
    counted = study_counted_memory(spec, study.user_attrs.get(CAPABILITIES_ATTR))
    console.print(
        f"[bold]{name}[/] · {spec.get('model', '?')} · {study.user_attrs.get(GPU_ATTR, '?')} · "
        f"budget {format_size(spec.get('vram_budget'))} of {counted} · peaks below are {counted}"
    )
    if not summary.rows:
        console.print("no trials yet: `qco-tune run` starts them")
        return
    console.print(f"trials: {summary.counts.describe()}")
    print_speedup(console, summary)
    if summary.front:
        console.print(_trial_table("Pareto front (feasible, fastest first)", summary.front))
    else:
        console.print("[yellow]no feasible trial yet[/]")
    _print_baselines(console, summary)
    dominated = summary.by_category("dominated")
    if dominated:
        console.print(_trial_table("dominated (feasible)", dominated))
    infeasible = summary.by_category("infeasible")
    if infeasible:
        title = "over budget" + (f" or below {spec['min_psnr']:g} dB PSNR" if spec.get("min_psnr") is not None else "")
        console.print(_trial_table(title, infeasible))
    _print_fidelity_note(console, summary, spec)
    _print_extrapolation(console, summary)
    _print_compile_cache(console, summary)
    _print_memory_model(console, summary)
    _print_reasons(console, "failed", summary.by_category("failed"))
    skipped = summary.by_category("skipped")
    if skipped:
        counts = Counter(r.reason or "?" for r in skipped)
        console.print(f"[bold]skipped before running[/] ({len(skipped)})")
        for reason, n in counts.most_common(8):
            console.print(f"  {n}× {reason}")
    running = summary.by_category("running")
    if running:
        console.print(f"running now: {', '.join('#' + str(r.number) for r in running)}")
    attrs = study.user_attrs
    _print_missing(console, attrs.get(SPEC_ATTR), attrs.get(MODEL_ATTR), attrs.get(CAPABILITIES_ATTR))


def print_study_json(name: str, url: str | None) -> None:
    """``qco-tune show --format json``: the study's JSON summary (``loop.summary.study_json``)."""
    click.echo(dumps(study_json(load_stored_study(name, url))))


def _print_baselines(console: Console, summary: ParetoSummary) -> None:
    if not summary.baselines:
        return
    table = Table(title="seeded guide recipes", title_justify="left")
    for name in ("recipe", "#", "latency", "peak mem", "state", "recipe latency ÷ best latency"):
        table.add_column(name)
    for name, row in summary.baselines.items():
        speedup = summary.speedups.get(name)
        faster = f"{speedup:.2f}×" if speedup else "-"
        best = summary.best
        if row.category == "infeasible" and row.latency_s and best is not None and best.latency_s:
            # The guide's recipe may not fit the budget; what it would cost in time is still worth saying.
            faster = f"{row.latency_s / best.latency_s:.2f}× (recipe over budget)"
        table.add_row(
            name,
            str(row.number),
            seconds(row.latency_s),
            format_size(row.memory_bytes),
            row.category if row.category not in ("front", "dominated") else "feasible",
            faster,
        )
    console.print(table)


def _print_fidelity_note(console: Console, summary: ParetoSummary, spec: dict[str, Any]) -> None:
    """What the PSNR column compares, and that random weights make it a measure of numerical deviation."""
    rows = [
        r for r in summary.rows if r.measurement and r.measurement.psnr_db is not None and r.category != "superseded"
    ]
    if not rows:
        return
    reference = next((r for r in rows if r.baseline and r.baseline.startswith("reference")), None)
    which = f"trial #{reference.number}, " if reference else ""
    offloaded = reference is not None and reference.config is not None and reference.config.offload == "model"
    dtype = spec.get("dtype", "bfloat16")
    how = f"{dtype}, no quantization or compile, " + (
        "with model CPU offload as it does not fit otherwise" if offloaded else "no offload"
    )
    console.print(
        f"PSNR · cos: decoded output (PSNR) and final latents (cosine) of each trial's first call against the "
        f"reference output ({which}{how}; same seed)."
    )
    if spec.get("weights", "random") == "random":
        console.print(
            "[dim]With random weights this measures numerical deviation (quantization, kernels, compilation), "
            "not picture quality: the images are noise either way.[/]"
        )


def _print_extrapolation(console: Console, summary: ParetoSummary) -> None:
    """Which latencies are extrapolated, and how the re-measured ones compare with their extrapolation."""
    from qco_tune.search.steps import extrapolation_of

    notes = [n for r in summary.rows if (n := extrapolation_of(r.measurement)) and r.category != "superseded"]
    if notes:
        console.print(
            f"~ latency extrapolated from {notes[0]['measured_steps']} to {notes[0]['steps']} denoising steps "
            "(fixed part + steps x per-step time); the final front is measured again at the full step count"
        )
    by_number = {r.number: r for r in summary.rows}
    pairs = [
        (old, r)
        for r in summary.rows
        if r.remeasure_of is not None and (old := by_number.get(r.remeasure_of)) is not None
    ]
    if not pairs:
        return
    console.print("[bold]measured again at the full step count[/] (authoritative; extrapolated → measured)")
    for old, new in pairs:
        error = _percent(relative(old.latency_s, new.latency_s))
        console.print(
            f"  #{old.number} → #{new.number} {old.config.describe() if old.config else '?'}: "
            f"{seconds(old.latency_s)} → {seconds(new.latency_s)} ({error})"
        )


def _print_compile_cache(console: Console, summary: ParetoSummary) -> None:
    import statistics

    starts = compile_cache_starts(summary.rows)
    if not starts["cold"] and not starts["warm"]:
        return
    parts = [
        f"{len(values)} {state} (median first call {statistics.median(values):.1f} s)"
        for state, values in starts.items()
        if values
    ]
    console.print("compiling trials' cache: " + ", ".join(parts))


def _percent(value: float | None) -> str:
    return f"{value:+.1%}" if value is not None else "-"


def _print_memory_model(console: Console, summary: ParetoSummary) -> None:
    """The memory model's prediction (made before each trial ran) against what the trial measured."""
    from qco_tune.search.calibration import relative_error, row_errors

    rows = [r for r in summary.rows if r.category in MEASURED and r.memory_bytes and r.predicted_bytes is not None]
    if not rows:
        return
    table = Table(title="memory model: predicted before running against measured", title_justify="left")
    for name in ("#", "configuration", "predicted", "measured", "error", "uncalibrated", "error "):
        table.add_column(name, no_wrap=name != "configuration", min_width=20 if name == "configuration" else None)
    for row in rows:
        table.add_row(
            str(row.number),
            row.config.describe() if row.config else "?",
            format_size(row.predicted_bytes),
            format_size(row.memory_bytes),
            _percent(relative_error(row.predicted_bytes, row.memory_bytes)),
            format_size(row.predicted_raw_bytes),
            _percent(relative_error(row.predicted_raw_bytes, row.memory_bytes)),
        )
    console.print(table)
    console.print(f"memory model error, feasible trials: {row_errors(summary.rows, feasible_only=True).describe()}")
    raw = row_errors(summary.rows, feasible_only=True, raw=True)
    if raw.trials:
        console.print(f"  the same trials before calibration: {raw.describe()}")


def _print_reasons(console: Console, title: str, rows: tuple[TrialRow, ...]) -> None:
    if not rows:
        return
    console.print(f"[bold]{title}[/] ({len(rows)})")
    for row in rows:
        what = row.config.describe() if row.config else "?"
        status = row.measurement.status if row.measurement else "failed"
        console.print(f"  #{row.number} {what}: {status}: {row.reason or 'no reason recorded'}")


def _print_missing(console: Console, spec: Any, model: Any, caps: Any) -> None:
    """Why knobs are missing from the space here (rebuilt from what the study stored)."""
    if not (isinstance(spec, dict) and isinstance(model, dict) and isinstance(caps, dict)):
        return
    from qco_tune.core.spec import spec_from_dict
    from qco_tune.search.space import SearchSpace

    try:
        space = SearchSpace.build(spec_from_dict(spec), ModelInfo.from_dict(model), Capabilities.from_dict(caps))
    except (ValueError, TypeError, KeyError):
        return
    missing = space.missing()
    if missing:
        console.print("[bold]not in the space here[/]")
        for knob, why in missing:
            console.print(f"  {knob}: {why}")
