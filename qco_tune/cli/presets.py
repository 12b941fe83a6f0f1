"""``qco-tune presets``: the random-weight presets, their sizes, and materialising one.

The listing is headless (no torch); ``materialize`` imports the builder and runs it in this process.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from qco_tune.core.paths import cache_dir
from qco_tune.core.presets import PRESETS, Preset, get_preset
from qco_tune.core.presets.cache import check_disk, is_materialized, marker, preset_folder
from qco_tune.core.units import format_size


class RichProgress:
    """A rich progress bar on stderr: one tick per component built and saved."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = None

    def start(self, title: str, total: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task(title, total=total)

    def step(self, description: str, advance: int = 1) -> None:
        self._bar.update(self._task, description=description, advance=advance)

    def finish(self) -> None:
        self._bar.stop()


def _params(count: int) -> str:
    if count >= 10**9:
        return f"{count / 1e9:.2f} B"
    if count >= 10**6:
        return f"{count / 1e6:.1f} M"
    return f"{count / 1e3:.1f} k"


def _state(preset: Preset) -> str:
    if not is_materialized(preset.name, cache_dir()):
        return "no"
    seconds = (marker(preset_folder(preset.name, cache_dir())) or {}).get("seconds")
    return "yes" + (f" (built in {seconds:.0f} s)" if isinstance(seconds, (int, float)) else "")


def presets_table() -> Table:
    """One row per preset: components with their parameters and bf16 size, totals, materialised here or not."""
    table = Table(title=f"random-weight presets (materialised under {cache_dir() / 'presets'})", title_justify="left")
    for name in ("preset", "pipeline", "component", "class", "params", "bf16", "materialised"):
        table.add_column(name, justify="right" if name in ("params", "bf16") else "left")
    for preset in PRESETS.values():
        for index, component in enumerate(preset.components):
            params = component.params or 0
            first = index == 0
            table.add_row(
                preset.name if first else "",
                preset.pipeline_class if first else "",
                component.name,
                component.class_name,
                _params(params),
                format_size(params * 2),
                _state(preset) if first else "",
            )
        table.add_row("", "", "[bold]total[/]", "", _params(preset.total_params), format_size(preset.size_bytes()), "")
        table.add_section()
    return table


def print_presets() -> None:
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 130)  # a pipe or a file: do not cut class names at 80 columns
    console.print(presets_table())
    click.echo(
        "Random weights time, fit and quantize like the real model; their images are noise "
        "(fidelity figures measure numerical deviation, not picture quality)."
    )


def materialize(name: str, device: str) -> None:
    """Build (or find) preset ``name``'s folder; print its path on stdout, how long it took on stderr."""
    preset = get_preset(name)
    check_disk(preset.name, cache_dir())  # before torch is even imported
    from qco_tune.measure.backends.libraries import import_libraries, quiet_libraries
    from qco_tune.measure.backends.materialize import materialize_preset

    quiet_libraries()
    import_libraries()
    interactive = sys.stderr.isatty()
    result = materialize_preset(
        preset.name, cache_dir(), None if device == "auto" else device, RichProgress() if interactive else None
    )
    took = f"{result.seconds:.1f} s" if result.seconds is not None else "an unknown time"
    verb = "built" if result.built else "found (it was built earlier"
    tail = "" if result.built else ")"
    click.echo(f"{preset.name}: {verb} in {took}{tail}: {format_size(preset.saved_bytes())} of weights", err=True)
    click.echo(str(result.path))
