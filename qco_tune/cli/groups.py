"""``qco-tune presets`` and ``qco-tune bench``: the random-weight presets, and the search benchmark."""

from __future__ import annotations

from pathlib import Path

import click

from qco_tune.cli.common import cli, friendly


@cli.group(invoke_without_command=True)
@click.pass_context
@friendly
def presets(ctx: click.Context) -> None:
    """Random-weight presets: parameters and bf16 size per component, and whether each is materialised here."""
    if ctx.invoked_subcommand is None:
        from qco_tune.cli.presets import print_presets

        print_presets()


@presets.command("materialize")
@click.argument("name")
@click.option(
    "--device",
    type=click.Choice(["auto", "cuda", "cpu"]),
    default="auto",
    show_default=True,
    help="Where the weights are created (auto: the GPU when there is one).",
)
@friendly
def presets_materialize(name: str, device: str) -> None:
    """Build (or find) preset NAME as a local diffusers folder and print its path.

    The folder loads with plain diffusers: DiffusionPipeline.from_pretrained(PATH). It lives under
    $QCO_CACHE (default: the XDG cache, ~/.cache/qco-tune) and is built once.
    """
    from qco_tune.cli.presets import materialize

    materialize(name, device)


DEFAULT_GRID = Path("studies/results/search-grid/grid.jsonl")


@cli.group()
def bench() -> None:
    """Benchmarks of the search itself, replayed on the CPU from recorded measurements."""


@bench.command("search")
@click.option(
    "--grid",
    "grid_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_GRID,
    show_default=True,
    help="A recorded grid (python -m qco_tune.tools.record_grid) or a synthetic one (qco-tune bench synthetic).",
)
@click.option("--seeds", type=int, default=20, show_default=True, help="Replays per sampler (seeds 0..N-1).")
@click.option(
    "--samplers",
    default="random,optuna_default,qco_tpe,qco",
    show_default=True,
    help="Comma-separated: random, optuna_default, qco_tpe, qco, exhaustive.",
)
@click.option("--budget", metavar="SIZE", help='VRAM budget, e.g. "4GiB" (default: the grid\'s).')
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON summary.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write an SVG line chart here.")
@friendly
def bench_search(
    grid_path: Path, seeds: int, samplers: str, budget: str | None, as_json: bool, plot: Path | None
) -> None:
    """GPU seconds each sampler spends to find the Pareto front, replayed from a recorded grid.

    Each replay is a real Optuna study over the grid's search space; a trial is answered with the
    recorded measurement and charged the recorded seconds. Reported per sampler: the median over
    seeds of the GPU seconds to reach 95% of the whole grid's feasible-front hypervolume.
    """
    import json

    from qco_tune.bench.grid import load_grid
    from qco_tune.bench.report import format_table, render_svg
    from qco_tune.bench.search import run_bench
    from qco_tune.core.units import parse_size
    from qco_tune.loop.summary import strict_json

    names = [n.strip() for n in samplers.split(",") if n.strip()]
    if not names:
        raise click.UsageError("--samplers names no sampler")
    budget_bytes = parse_size(budget) if budget is not None else None
    grid = load_grid(grid_path)

    def progress(name: str, seed: int) -> None:
        if seed == 0:
            click.echo(f"replaying {name} ({seeds} seed(s))", err=True)

    result = run_bench(grid, names, seeds, budget_bytes, progress=progress)
    if plot is not None:
        plot.write_text(render_svg(result), encoding="utf-8")
        click.echo(f"wrote {plot}", err=True)
    if as_json:
        click.echo(json.dumps(strict_json(result.to_json()), allow_nan=False))
    else:
        click.echo(format_table(result))


@bench.command("synthetic")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the made-up figures.")
@friendly
def bench_synthetic(out: Path, seed: int) -> None:
    """Write a SYNTHETIC grid (made-up figures with the structure a real one is expected to have) to OUT."""
    from qco_tune.bench.grid import synthetic_grid

    grid = synthetic_grid(seed)
    grid.write(out)
    click.echo(f"wrote {out}: {len(grid.records)} synthetic configurations, {grid.total_seconds:,.0f} s in all")
