"""Runs one trial in a fresh child process and turns every way it can end into data.

The parent never imports torch or initialises CUDA: the child (``qco_tune.measure.backends.child``) does
all GPU work and writes a ``Measurement`` as JSON. Out-of-memory and exceptions come back from the
child as data; a crash (signal), a hang (time limit) and Ctrl-C are recognised here.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qco_tune.core.config import Capabilities, Measurement, TrialRequest

PHASE_PREFIX = "QCO-PHASE "
OUTPUT_TAIL_LINES = 40
PROBE_TIMEOUT_S = 300.0


class TrialInterrupted(KeyboardInterrupt):
    """Ctrl-C arrived while a trial ran; the child is already gone. Carries what was recorded."""

    def __init__(self, measurement: Measurement) -> None:
        super().__init__("trial interrupted")
        self.measurement = measurement


def child_env() -> dict[str, str]:
    """The child's environment: unbuffered output, and this package importable even when not installed."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _die_with_parent() -> None:
    """In the child, before exec: Linux delivers SIGKILL to it when the parent dies (even by ``kill -9``)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """End the child and anything it started (compile workers): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def run_trial(
    request: TrialRequest,
    *,
    timeout: float,
    on_phase: Callable[[str], None] | None = None,
    on_output: Callable[[str], None] | None = None,
) -> Measurement:
    """Run ``request`` in a new process; return its measurement, whatever happened.

    ``timeout`` is the trial's wall-clock limit in seconds: past it the child is killed and the
    trial is recorded as a hang. Ctrl-C (``KeyboardInterrupt``) kills the child and raises
    ``TrialInterrupted`` carrying an ``interrupted`` measurement.
    """
    with tempfile.TemporaryDirectory(prefix="qco-trial-") as tmp:
        request_path = Path(tmp) / "request.json"
        result_path = Path(tmp) / "result.json"
        request_path.write_text(json.dumps(request.to_dict()))
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        proc = subprocess.Popen(
            [sys.executable, "-m", "qco_tune.measure.backends.child", str(request_path), str(result_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=child_env(),
            # Its own session: a terminal's Ctrl-C reaches only the parent, which then ends the child.
            start_new_session=True,
            # A parent killed with SIGKILL must not leave a child holding the GPU.
            preexec_fn=_die_with_parent,
        )
        reader = threading.Thread(target=_read_output, args=(proc, tail, on_phase, on_output), daemon=True)
        reader.start()
        started = time.monotonic()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            reader.join(timeout=5)
            return _failed("timeout", f"no result after {timeout:.0f} s: killed (hang)", tail, started)
        except KeyboardInterrupt:
            _kill_group(proc)
            reader.join(timeout=5)
            raise TrialInterrupted(
                _failed("interrupted", "interrupted by Ctrl-C; the trial's child was stopped", tail, started)
            ) from None
        reader.join(timeout=5)
        return _collect(proc.returncode, result_path, tail, started)


def _read_output(
    proc: subprocess.Popen[str],
    tail: collections.deque[str],
    on_phase: Callable[[str], None] | None,
    on_output: Callable[[str], None] | None,
) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        if line.startswith(PHASE_PREFIX):
            if on_phase is not None:
                on_phase(line[len(PHASE_PREFIX) :].strip())
            continue
        tail.append(line)
        if on_output is not None:
            on_output(line)


def _failed(status: str, reason: str, tail: collections.deque[str], started: float) -> Measurement:
    return Measurement(
        status=status,  # type: ignore[arg-type]
        reason=reason,
        output_tail="\n".join(tail),
        extra={"wall_s": time.monotonic() - started},
    )


def _collect(returncode: int, result_path: Path, tail: collections.deque[str], started: float) -> Measurement:
    if result_path.exists():
        try:
            data = json.loads(result_path.read_text())
            measurement = Measurement.from_dict(data)
        except (ValueError, TypeError) as exc:
            return _failed("crash", f"unreadable result from the trial: {exc}", tail, started)
        extra = {**measurement.extra, "wall_s": time.monotonic() - started}
        if measurement.status != "ok" and not measurement.output_tail:
            return Measurement.from_dict({**measurement.to_dict(), "output_tail": "\n".join(tail), "extra": extra})
        return Measurement.from_dict({**measurement.to_dict(), "extra": extra})
    if returncode < 0:
        return _failed("crash", f"trial process crashed: killed by {_signal_name(returncode)}", tail, started)
    last = next((line for line in reversed(tail) if line.strip()), "")
    reason = f"trial process exited with code {returncode} without a result: {last}"
    return _failed("crash", reason[:300], tail, started)


def probe_capabilities(timeout: float = PROBE_TIMEOUT_S) -> Capabilities:
    """What this machine can run, asked of a child process so the parent never initialises CUDA."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "qco_tune.measure.backends.probe"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"probing the GPU and libraries took over {timeout:.0f} s") from None
    line = next((line for line in reversed(out.stdout.splitlines()) if line.startswith("{")), None)
    if out.returncode != 0 or line is None:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"probing the GPU and libraries failed: {last}")
    return Capabilities.from_dict(json.loads(line))
