"""Helpers of the backend tests: a tiny workload, and running the trial child as the runner does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qco_tune.core.records import Measurement, TrialRequest
from qco_tune.core.studyspec import Workload

REPO = Path(__file__).resolve().parents[2]
TINY_WORKLOAD = Workload(height=64, width=64, steps=2, guidance=3.5, max_sequence_length=32)

ChildRun = tuple[subprocess.CompletedProcess[str], Measurement | None]


class ChildProcess:
    """``python -m qco_tune.measure.backends.child`` on ``request``, started now; ``finish()`` waits for it."""

    def __init__(self, request: TrialRequest, folder: Path) -> None:
        request_path, self.result_path = folder / "request.json", folder / "result.json"
        request_path.write_text(json.dumps(request.to_dict()))
        pythonpath = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qco_tune.measure.backends.child", str(request_path), str(self.result_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": pythonpath},
        )

    def finish(self, timeout: float = 600) -> ChildRun:
        """The finished process and its measurement (None if it wrote none)."""
        stdout, stderr = self.proc.communicate(timeout=timeout)
        done = subprocess.CompletedProcess(self.proc.args, self.proc.returncode, stdout, stderr)
        path = self.result_path
        return done, Measurement.from_dict(json.loads(path.read_text())) if path.exists() else None


def run_child(request: TrialRequest, folder: Path, timeout: float = 600) -> ChildRun:
    """Run the trial child on ``request`` to the end."""
    return ChildProcess(request, folder).finish(timeout)
