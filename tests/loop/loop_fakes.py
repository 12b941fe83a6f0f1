"""FAKE stand-ins for the study loop's tests: a GPU machine's capabilities and trial runners that run nothing.

No child process, no GPU: each runner records the requests it is given and answers with invented figures.
"""

from __future__ import annotations

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Measurement, TrialRequest
from qco_tune.loop.context import SilentObserver


class FakeRunner:
    """A FAKE trial runner: records each request and returns invented figures (no child, no GPU)."""

    def __init__(self) -> None:
        self.requests: list[TrialRequest] = []

    def __call__(self, request: TrialRequest, timeout: float, on_phase: object = None) -> Measurement:
        self.requests.append(request)
        return Measurement(status="ok", device="cuda", latency_s=5.0, step_time_s=0.18, peak_device_bytes=30 * 2**30)


class Messages(SilentObserver):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


class FakeTimedRunner:
    """A FAKE runner: each trial 'costs' the seconds given for its compile scope, on a fake clock."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.now = 0.0
        self.seconds = seconds
        self.ran: list[TrialConfig] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, request: TrialRequest, timeout: float, on_phase: object = None) -> Measurement:
        wall = self.seconds.get(request.config.compile, max(self.seconds.values()))
        self.now += wall
        self.ran.append(request.config)
        return Measurement(
            status="ok", device="cuda", latency_s=5.0, peak_device_bytes=15 * 2**30, extra={"wall_s": wall}
        )
