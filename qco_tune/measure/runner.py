"""Runs one trial in a fresh child process and turns every way it can end into data.

The parent never imports torch or initialises CUDA: the child (``qco_tune.measure.backends.child``,
started by ``measure.launcher``) does all GPU work and writes a ``Measurement`` as JSON. Out-of-memory
and exceptions come back from the child as data; a crash (signal), a hang (time limit) and Ctrl-C are
recognised here.
"""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qco_tune.core.paths import trial_dir_prefix
from qco_tune.core.records import Capabilities, Measurement, ModelInfo, TrialRequest
from qco_tune.measure.launcher import kill_group, launch, phase_of, signal_name

OUTPUT_TAIL_LINES = 40
PROBE_TIMEOUT_S = 300.0


class TrialInterrupted(KeyboardInterrupt):
    """Ctrl-C arrived while a trial ran; the child is already gone. Carries what was recorded."""

    def __init__(self, measurement: Measurement) -> None:
        super().__init__("trial interrupted")
        self.measurement = measurement


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
    with tempfile.TemporaryDirectory(prefix=trial_dir_prefix()) as tmp:
        request_path = Path(tmp) / "request.json"
        result_path = Path(tmp) / "result.json"
        request_path.write_text(json.dumps(request.to_dict()))
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        proc = launch("qco_tune.measure.backends.child", str(request_path), str(result_path))
        reader = threading.Thread(target=_read_output, args=(proc, tail, on_phase, on_output), daemon=True)
        reader.start()
        started = time.monotonic()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            reader.join(timeout=5)
            return _failed("timeout", f"no result after {timeout:.0f} s: killed (hang)", tail, started)
        except KeyboardInterrupt:
            kill_group(proc)
            reader.join(timeout=5)
            raise TrialInterrupted(
                _failed(
                    "interrupted",
                    "interrupted (Ctrl-C or SIGTERM); the trial's child was stopped",
                    tail,
                    started,
                )
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
        phase = phase_of(line)
        if phase is not None:
            if on_phase is not None:
                on_phase(phase)
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
        return _failed("crash", f"trial process crashed: killed by {signal_name(returncode)}", tail, started)
    last = next((line for line in reversed(tail) if line.strip()), "")
    reason = f"trial process exited with code {returncode} without a result: {last}"
    return _failed("crash", reason[:300], tail, started)


def probe_capabilities(timeout: float = PROBE_TIMEOUT_S, on_slow: Callable[[str], None] | None = None) -> Capabilities:
    """What this machine can run, asked of a child process so the parent never initialises CUDA.

    ``on_slow`` gets one line when the probe took over ``SLOW_PROBE_S``, naming its slowest stage.
    """
    started = time.monotonic()
    result, lines = _ask_child("qco_tune.measure.backends.probe", what="the GPU and libraries", timeout=timeout)
    took = time.monotonic() - started
    if on_slow is not None and took > SLOW_PROBE_S:
        on_slow(_slow_probe_line(took, lines))
    return Capabilities.from_dict(result)


def inspect_model(model: ModelInfo, timeout: float = PROBE_TIMEOUT_S) -> ModelInfo:
    """``model`` with the traits of its diffusers components (``model_traits``), read by a child process
    from the local folder's configs without weights. Presets are returned as they are: their classes
    offer every knob."""
    if model.source == "preset" or model.path is None:
        return model
    module, what = "qco_tune.measure.backends.model_traits", f"the model classes of {model.reference}"
    traits, _ = _ask_child(module, model.path, what=what, timeout=timeout)
    return model.with_traits({name: tuple(found) for name, found in traits.items()})


_STAGE_LINE = '{"stage_seconds"'
"""The probe's progress line (seconds per stage), printed before its result."""


def _ask_child(module: str, *args: str, what: str, timeout: float) -> tuple[dict[str, Any], list[str]]:
    """(the JSON object ``python -m module args`` prints last, all its JSON lines); RuntimeError naming ``what``."""
    proc = launch(module, *args, merge_stderr=False)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        raise RuntimeError(f"probing {what} took over {timeout:.0f} s") from None
    except KeyboardInterrupt:
        kill_group(proc)
        raise
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    line = next((line for line in reversed(lines) if not line.startswith(_STAGE_LINE)), None)
    if proc.returncode != 0 or line is None:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"probing {what} failed: {last}")
    result: dict[str, Any] = json.loads(line)
    return result, lines


SLOW_PROBE_S = 30.0
"""A probe slower than this says where its time went (about 20 s on a 2-core CPU machine, mostly imports)."""


def _slow_probe_line(took: float, lines: list[str]) -> str:
    stages: dict[str, float] = {}
    for line in lines:
        with contextlib.suppress(ValueError, AttributeError):
            stages = dict(json.loads(line).get("stage_seconds") or stages)
    text = f"probing this machine took {took:.0f} s"
    if stages:
        stage, seconds = max(stages.items(), key=lambda item: item[1])
        text += f", {seconds:.0f} s of it {stage}"
        if stage == "checking the quantization kernels":
            text += " (a library builds its GPU kernels on first use, once per install)"
    return text
