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

PHASE_WORDS = {
    "starting": "starting the trial's own process",
    "import": "importing torch, diffusers and the quantization libraries",
    "load": "loading, quantizing (quanto's first load builds a C++ extension: tens of s)",
    "apply": "applying offloading, settings and torch.compile",
    "first-call": "first call: the cold start, compilation included",
    "warmup": "warm-up call",
    "timed": "timed calls",
    "done": "done; recording the measurement",
}
"""What a trial's phase (``QCO-PHASE`` of ``measure/backends/child.py``) is doing, for the live display."""


def phase_words(phase: str) -> str:
    """``timed 2/3`` → the words of ``timed``; an unknown phase has none."""
    return PHASE_WORDS.get(phase.split(" ", 1)[0], "")


REFERENCE_PREFIX = "reference"


class LiveObserver:
    """Study observer that keeps a small live panel: trials done of N, the running trial, its phase (a timer
    that ticks, and what the phase does), the best so far and the last finished trial. The panel is removed
    when the run ends (``close``): what stays on screen is the line per finished trial and the summary."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._interactive = self.console.is_terminal
        self._live: Live | None = None
        self._target: int | None = None
        self._done = 0
        self._index = 0
        self._trial = ""
        self._phase = ""
        self._phase_since = time.monotonic()
        self._best: float | None = None
        self._last = ""

    # -- context ----------------------------------------------------------------------------
    def __enter__(self) -> LiveObserver:
        if self._interactive:
            # get_renderable: the panel is drawn afresh at every refresh, so the phase timer ticks.
            self._live = Live(console=self.console, refresh_per_second=4, transient=True, get_renderable=self._render)
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
        done = f"{self._done} of {self._target}" if self._target else str(self._done)
        words = phase_words(self._phase)
        lines = [
            Text(f"trials done: {done} (the reference is measured first and is not one of them)", style="bold"),
            Text(self._trial or "waiting for the first trial"),
            Text(f"phase: {self._phase or '-'} ({elapsed:.0f} s)" + (f" · {words}" if words else ""), style="cyan"),
            Text(f"best feasible latency so far: {best}", style="green"),
        ]
        if self._last:
            lines.append(Text(f"last finished: {self._last}", style="dim"))
        return Group(*lines)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _say(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, highlight=False, markup=False)

    # -- Observer events ----------------------------------------------------------------------
    def study_started(self, spec: StudySpec, done: int, target: int | None, resumed: bool) -> None:
        self._target, self._done = target, done
        verb = "resuming" if resumed else "starting"
        model = f"{spec.model} (revision {spec.revision})" if spec.revision else spec.model
        header = (
            f"qco-tune · {verb} study {spec.name!r} · {model} · budget {format_size(spec.vram_budget)}"
            f" · {done} of " + (f"{target} trials done" if target else "unlimited trials done")
        )
        self._say(header, "bold")
        self._refresh()

    def trial_started(self, number: int, config: TrialConfig, baseline: str | None, index: int) -> None:
        label = f" [baseline: {baseline}]" if baseline else ""
        if baseline is not None and baseline.startswith(REFERENCE_PREFIX):
            self._index = 0  # measurement, not one of the target's trials
            self._trial = f"reference (study trial #{number}, not counted) · {config.describe()}{label}"
        else:
            of = f" of {self._target}" if self._target else ""
            self._index, self._done = index, index - 1
            self._trial = f"trial {index}{of} (study trial #{number}) · {config.describe()}{label}"
        self._phase, self._phase_since = "starting", time.monotonic()
        if not self._interactive:
            self._say(self._trial)
        self._refresh()

    def phase(self, text: str) -> None:
        self._phase, self._phase_since = text, time.monotonic()
        if not self._interactive and phase_words(text) and text.split(" ", 1)[0] in ("import", "load"):
            self._say(f"  {text}: {phase_words(text)}", "dim")
        self._refresh()

    def trial_finished(self, number: int, measurement: Measurement, feasible: bool, best: float | None) -> None:
        self._best = best
        if self._index:
            self._done = self._index
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
