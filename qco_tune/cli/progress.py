"""The live progress display of ``qco-tune run`` (rich), or plain lines when output is not a terminal."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Measurement
from qco_tune.core.studyspec import StudySpec
from qco_tune.core.units import format_size


class LiveObserver:
    """Study observer that keeps a small live panel: trial n of N, configuration, phase, best so far."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._interactive = self.console.is_terminal
        self._live: Live | None = None
        self._target: int | None = None
        self._trial = ""
        self._phase = ""
        self._phase_since = time.monotonic()
        self._best: float | None = None
        self._last = ""
        self._header = ""

    # -- context ----------------------------------------------------------------------------
    def __enter__(self) -> LiveObserver:
        if self._interactive:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    # -- rendering ----------------------------------------------------------------------------
    def _render(self) -> Group:
        elapsed = time.monotonic() - self._phase_since
        best = f"{self._best:.3f} s" if self._best is not None else "-"
        lines = [
            Text(self._header, style="bold"),
            Text(self._trial or "waiting for the first trial"),
            Text(f"phase: {self._phase or '-'} ({elapsed:.0f} s)", style="cyan"),
            Text(f"best feasible latency so far: {best}", style="green"),
        ]
        if self._last:
            lines.append(Text(f"last: {self._last}", style="dim"))
        return Group(*lines)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _say(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, highlight=False, markup=False)

    # -- Observer events ----------------------------------------------------------------------
    def study_started(self, spec: StudySpec, done: int, target: int | None, resumed: bool) -> None:
        self._target = target
        verb = "resuming" if resumed else "starting"
        self._header = (
            f"qco-tune · {verb} study {spec.name!r} · {spec.model} · budget {format_size(spec.vram_budget)}"
            f" · {done} trial(s) done" + (f" of {target}" if target else "")
        )
        self._say(self._header, "bold")
        self._refresh()

    def trial_started(self, number: int, config: TrialConfig, baseline: str | None, index: int) -> None:
        of = f" of {self._target}" if self._target else ""
        label = f" [baseline: {baseline}]" if baseline else ""
        self._trial = f"trial {index}{of} · #{number} {config.describe()}{label}"
        self._phase, self._phase_since = "starting", time.monotonic()
        if not self._interactive:
            self._say(self._trial)
        self._refresh()

    def phase(self, text: str) -> None:
        self._phase, self._phase_since = text, time.monotonic()
        self._refresh()

    def trial_finished(self, number: int, measurement: Measurement, feasible: bool, best: float | None) -> None:
        self._best = best
        if measurement.status == "ok" and measurement.latency_s is not None:
            mem = measurement.peak_device_bytes if measurement.device == "cuda" else measurement.peak_host_bytes
            where = "VRAM" if measurement.device == "cuda" else "host RAM"
            verdict = "" if feasible else " (over budget)"
            self._last = f"#{number} {measurement.latency_s:.3f} s, peak {where} {format_size(mem)}{verdict}"
        else:
            self._last = f"#{number} {measurement.status}: {measurement.reason or ''}"
        self._say(("  ✓ " if measurement.status == "ok" else "  ✗ ") + self._last, None)
        self._refresh()

    def trial_skipped(self, number: int, config: TrialConfig, reason: str) -> None:
        self._say(f"  · #{number} skipped ({config.describe()}): {reason}", "dim")

    def message(self, text: str) -> None:
        self._say(text, "yellow")
