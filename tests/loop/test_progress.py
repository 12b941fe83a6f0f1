"""The live display of ``qco-tune run`` (``cli.progress.LiveObserver``), on a recording rich console."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from qco_tune.cli.progress import LiveObserver, configure_logging, log_level
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Measurement
from qco_tune.core.spec import load_default_spec


def _panel(observer: LiveObserver) -> str:
    console = Console(width=300, file=io.StringIO(), record=True)
    console.print(observer._render())
    return console.export_text()


def _ok(latency: float) -> Measurement:
    return Measurement(status="ok", device="cpu", latency_s=latency, peak_host_bytes=900 * 2**20)


def test_the_panel_names_the_last_trial_says_both_numbers_and_its_timer_ticks() -> None:
    spec = load_default_spec()
    out = io.StringIO()
    observer = LiveObserver(Console(file=out, force_terminal=True, width=200))
    with observer:
        observer.study_started(spec, 0, 8, resumed=False)
        observer.trial_started(0, TrialConfig(), "reference", 1)
        assert "reference (study trial #0, not counted) · bf16" in _panel(observer)
        observer.phase("load")
        observer._phase_since = time.monotonic() - 31  # as if quanto had been building its extension for 31 s
        panel = _panel(observer)
        assert "phase: load (31 s)" in panel and "quanto's first load builds a C++ extension" in panel
        observer._phase_since -= 5
        assert "phase: load (36 s)" in _panel(observer)  # drawn afresh each time: the timer ticks
        observer.trial_finished(0, _ok(0.5), True, 0.5)
        assert "trials done: 0 of 8" in _panel(observer)  # the reference is not one of the 8
        observer.trial_started(5, TrialConfig(compile="regional"), None, 1)
        assert "trial 1 of 8 (study trial #5) · bf16 · compile regional" in _panel(observer)
        observer.trial_finished(5, _ok(0.2), True, 0.2)
        observer.trial_started(9, TrialConfig(), None, 2)
        observer.trial_finished(9, _ok(0.3), True, 0.2)
        panel = _panel(observer)
        assert "last finished: #9 0.300 s, peak host RAM 900.0 MiB" in panel and "trials done: 2 of 8" in panel
    text = out.getvalue()
    # The header is said once, when the study starts; the panel is gone when the run ends.
    assert text.count("starting study") == 1 and "0 of 8 trials done" in text
    assert "trial(s) done" not in text


STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (DEBUG|INFO|WARNING|ERROR) ")


def _logged(capsys: pytest.CaptureFixture[str], level: int, failed: bool = False) -> list[str]:
    """The lines a run without a terminal writes at ``level``: trial 12 loads, then finishes (or fails)."""
    configure_logging(level)
    capsys.readouterr()
    with LiveObserver(Console(file=io.StringIO(), width=200), level=level) as observer:
        observer.study_started(load_default_spec(), 3, 8, resumed=True)
        observer.trial_started(12, TrialConfig(), None, 4)
        observer.phase("load")
        observer.phase("timed 1/3")
        bad = Measurement(status="oom", device="cpu", reason="out of memory")
        observer.trial_finished(12, bad if failed else _ok(0.25), False, None)
    lines = capsys.readouterr().err.splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    return [STAMP.sub(r"\1 ", line) for line in lines]


def test_without_a_terminal_each_trial_and_long_phase_is_a_timestamped_log_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = _logged(capsys, log_level(verbose=0, quiet=0))
    assert lines[0].endswith("· 3 of 8 trials done") and "INFO qco-tune · resuming study" in lines[0]
    assert lines[1] == "INFO trial 4 of 8 (study trial #12) · bf16"
    assert lines[2].startswith("INFO load: loading, quantizing")
    assert lines[3] == "INFO ✓ #12 0.250 s, peak host RAM 900.0 MiB (over budget)"
    assert len(lines) == 4  # the quick phases only with -v


def test_verbose_adds_every_phase_and_quiet_keeps_the_failures(capsys: pytest.CaptureFixture[str]) -> None:
    verbose = _logged(capsys, log_level(verbose=1, quiet=0))
    assert "DEBUG timed 1/3: timed calls" in verbose and len(verbose) == 5
    assert _logged(capsys, log_level(verbose=0, quiet=1)) == []  # a trial that ran is no warning
    quiet_failed = _logged(capsys, log_level(verbose=0, quiet=1), failed=True)
    assert quiet_failed == ["WARNING ✗ #12 oom: out of memory"]
