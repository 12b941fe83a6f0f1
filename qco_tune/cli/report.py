"""Text reports of stored studies for ``qco-tune list``, ``compare`` and the end of ``run``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.table import Table

from qco_tune.cli.console import print_speedup, report_console, seconds
from qco_tune.core.keys import CAPABILITIES_ATTR, GPU_ATTR, GPU_KINDS_ATTR, SPEC_ATTR
from qco_tune.core.units import format_size
from qco_tune.loop.summary import dumps
from qco_tune.search.budget import study_counted_memory
from qco_tune.search.pareto import SPEEDUP_DEFINITION, SPEEDUP_HEADER

if TYPE_CHECKING:
    import optuna

    from qco_tune.loop.context import RunResult


def print_study_list(url: str | None, *, as_json: bool = False) -> None:
    """``qco-tune list``: one row per study (``--format json``: ``loop.summary.studies_json``)."""
    import optuna

    from qco_tune.loop.setup import load_summary
    from qco_tune.store.storage import mask_url, open_storage, storage_url

    if as_json:
        from qco_tune.loop.summary import studies_json

        click.echo(dumps(studies_json(url)))
        return
    storage = open_storage(url)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    console = report_console()
    if not summaries:
        console.print(f"no studies in {mask_url(storage_url(url))}: `qco-tune run` starts one")
        return
    table = Table(title=f"studies in {mask_url(storage_url(url))}", title_justify="left")
    columns = ("study", "model", "GPU", "budget", "ran", "ok/over/failed", "skipped", "best feasible", SPEEDUP_HEADER)
    for name in columns:
        table.add_column(name)
    for item in summaries:
        study = optuna.load_study(study_name=item.study_name, storage=storage)
        summary = load_summary(study)
        spec = study.user_attrs.get(SPEC_ATTR, {})
        c = summary.counts
        best = summary.best
        counted = study_counted_memory(spec, study.user_attrs.get(CAPABILITIES_ATTR))
        table.add_row(
            item.study_name,
            str(spec.get("model", "?")),
            str(study.user_attrs.get(GPU_ATTR, "?")),
            f"{format_size(spec.get('vram_budget'))} {counted}",
            str(c.ran) + (f" +{c.running} running" if c.running else ""),
            f"{c.feasible}/{c.infeasible}/{c.failed}",
            str(c.skipped),
            seconds(best.latency_s) + f" (#{best.number})" if best else "-",
            summary.speedup.describe() if summary.speedup else "-",
        )
    console.print(table)
    console.print(f"[dim]{SPEEDUP_DEFINITION}; ran: the reference included, skipped: never ran[/]")


def print_run_result(result: RunResult) -> None:
    """What a ``qco-tune run`` did, and how the best configuration compares with the seeded recipes."""
    console = report_console()
    why = {
        "trials": "reached the trial target",
        "timeout": "reached the time limit",
        "exhausted": "every valid configuration has been tried",
        "prepared": "prepared for workers (`qco-tune worker`)",
    }.get(result.stopped, result.stopped)
    summary = result.summary
    if summary is None:
        console.print(f"study {result.study_name!r}: ran {result.ran} trial(s), skipped {result.skipped}; {why}")
        return
    counts = summary.counts
    this_run = (result.ran + len(result.remeasured), result.skipped)
    mine = "" if this_run == (counts.ran, counts.skipped) else f" (this run: ran {this_run[0]}, skipped {this_run[1]})"
    console.print(f"study {result.study_name!r}: {why}; trials: {counts.describe()}{mine}")
    if result.remeasured:
        pairs = ", ".join(f"#{a} → #{b}" for a, b in result.remeasured)
        console.print(f"measured again at the full step count: {pairs}")
    if summary.best is None:
        console.print("[yellow]no feasible configuration yet[/]")
    else:
        best = summary.best
        counted = "host RAM" if best.measurement and best.measurement.device == "cpu" else "VRAM"
        console.print(
            f"best feasible: #{best.number} {best.config.describe() if best.config else '?'} · "
            f"{seconds(best.latency_s)} · peak {counted} {format_size(best.memory_bytes)}"
        )
        print_speedup(console, summary)
        for name, ratio in summary.speedups.items():
            row = summary.baselines[name]
            if row.number != best.number:
                latency = seconds(row.latency_s)
                console.print(f"  recipe {name!r} #{row.number}: {latency}, {ratio:.2f}× the best's latency")
    if any(r.measurement is not None and r.measurement.device == "cpu" for r in summary.rows):
        console.print(GPU_NEXT)
    console.print(f"details: qco-tune show {result.study_name}")


GPU_NEXT = (
    "These figures were measured on a CPU (the default study: a toy model): they say nothing about a GPU. "
    "On a GPU: `qco-tune run --model flux.1-dev --budget 16GiB` (FLUX.1-dev with random weights: 32 GB of disk "
    "once, minutes of GPU time per trial; no trial limit, so add --trials 20 or --timeout 2h)."
)
"""The end of a run measured on the CPU: what its figures do not say, and what to run on a GPU, with its cost."""


def print_comparison(studies: list[optuna.Study]) -> None:
    """``qco-tune compare``: matching configurations side by side, each study's front, and the differences."""
    from qco_tune.loop.crossgpu import load_comparison

    comparison = load_comparison(studies)
    console = report_console()
    names = comparison.studies
    for study in studies:
        kinds = study.user_attrs.get(GPU_KINDS_ATTR) or [study.user_attrs.get(GPU_ATTR, "?")]
        console.print(f"[bold]{study.study_name}[/]: {', '.join(map(str, kinds))}")
    table = Table(title="configurations measured in every study (speed-up against the first)", title_justify="left")
    table.add_column("configuration")
    for i, name in enumerate(names):
        table.add_column(f"{name} latency")
        table.add_column(f"{name} peak")
        if i:
            table.add_column("speed-up")
    for item in comparison.matched:
        cells = [item.config.describe() + (f" [{item.baseline}]" if item.baseline else "")]
        for i in range(len(names)):
            front = "*" if item.on_front(i) else ""
            cells += [seconds(item.latency(i)) + front, format_size(item.memory(i))]
            if i:
                speedup = item.speedup(i)
                cells.append(f"{speedup:.2f}×" if speedup else "-")
        table.add_row(*cells)
    console.print(table)
    console.print("* on that study's feasible Pareto front")
    for i, name in enumerate(names):
        median = comparison.median_speedup(i) if i else None
        front = ", ".join(f"#{r.number}" for r in comparison.summaries[i].front) or "none"
        line = f"{name}: front {front}"
        if median:
            line += f"; median speed-up over {names[0]}: {median:.2f}×"
        console.print(line)
        only = comparison.front_only_in(i)
        if only:
            console.print(f"  on {name}'s front only: " + "; ".join(c.config.describe() for c in only))
    unmatched = len(comparison.configs) - len(comparison.matched)
    if unmatched:
        console.print(f"{unmatched} configuration(s) were measured in only some studies")
    for i, j in ((i, j) for i in range(len(names)) for j in range(len(names)) if i != j):
        missing = len(comparison.front_unmeasured_in(i, j))
        if missing:
            console.print(
                f"  {missing} of {names[i]}'s front not measured in {names[j]}: "
                f"`qco-tune compare --replay {names[i]} --into {names[j]}` queues them there"
            )
