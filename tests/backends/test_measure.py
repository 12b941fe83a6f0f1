"""Trackers and latency statistics."""

from __future__ import annotations

import time

import pytest

from qco_tune.measure.backends.measure import (
    HostMemoryTracker,
    StepTimer,
    Stopwatch,
    latency_spread,
    needs_more_calls,
    relative_spread,
)


def test_stopwatch_times_the_block() -> None:
    with Stopwatch("cpu") as watch:
        time.sleep(0.05)
    assert watch.elapsed is not None and 0.05 <= watch.elapsed < 1.0


def test_host_tracker_sees_a_short_allocation() -> None:
    with HostMemoryTracker() as baseline:
        pass
    with HostMemoryTracker() as tracker:
        block = bytearray(256 * 2**20)  # touched pages: resident
        del block
    assert baseline.peak_bytes is not None and tracker.peak_bytes is not None
    assert tracker.peak_bytes >= baseline.peak_bytes + 200 * 2**20


def test_step_timer_returns_the_kwargs_and_times_steps() -> None:
    timer = StepTimer("cpu")
    kwargs = {"latents": object()}
    for step in range(3):
        time.sleep(0.02)
        assert timer(None, step, 0, kwargs) is kwargs
    assert len(timer.durations) == 2  # the first step has no preceding timestamp
    assert timer.step_time_s is not None and timer.step_time_s >= 0.02
    timer(None, 0, 0, kwargs)  # a new call starts: no step across calls
    assert len(timer.durations) == 2
    timer.reset()
    assert timer.step_time_s is None


def test_spread_is_iqr_from_four_calls_and_range_below() -> None:
    assert latency_spread([]) is None
    assert latency_spread([1.0, 1.2, 1.1]) == pytest.approx(0.2)
    assert latency_spread([1.0, 2.0, 3.0, 4.0, 100.0]) == pytest.approx(2.0)  # robust to one outlier
    assert relative_spread([2.0, 2.0]) == 0.0


def test_more_calls_until_minimum_then_while_noisy() -> None:
    assert needs_more_calls([1.0, 1.0], minimum=3, maximum=10)
    assert not needs_more_calls([1.0, 1.01, 1.02], minimum=3, maximum=10)
    assert needs_more_calls([1.0, 1.5, 1.0], minimum=3, maximum=10)
    assert not needs_more_calls([1.0, 1.5, 1.0, 1.7], minimum=3, maximum=4)
