"""Studies started from the TUI: ``qco-tune run SPEC --storage URL`` in a background process. Headless.

The process gets its own session, and stopping it is SIGTERM to its process group: ``qco-tune run``
takes it as Ctrl-C (``loop.signals``), stops the running trial's child, records that trial as
interrupted and exits 130. Not SIGINT: a process started in the background of a shell inherits SIGINT
as ignored, and it would stay ignored until ``run`` installs its handlers. Progress is read from the
storage, like any other running study.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

RUN_COMMAND: tuple[str, ...] = (sys.executable, "-m", "qco_tune", "run")


def study_name_of(spec_path: Path) -> str:
    """The study a spec file runs, as ``qco-tune run`` names it (a name derived when the spec has none)."""
    try:
        from qco_tune.core.spec import load_spec

        return load_spec(spec_path).name
    except Exception:  # an unreadable or invalid spec: the run itself reports why
        pass
    try:
        data = tomllib.loads(spec_path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return spec_path.stem
    name = data.get("name") or (data.get("study") or {}).get("name") if isinstance(data, dict) else None
    return str(name) if name else spec_path.stem


@dataclass
class BackgroundRun:
    """One ``qco-tune run`` started from the TUI."""

    spec_path: Path
    study: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.returncode is None

    @property
    def state(self) -> str:
        code = self.returncode
        if code is None:
            return "stopping" if self.stopping else "running"
        return {0: "finished", 130: "stopped"}.get(code, f"exited with {code}")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def tail(self, lines: int = 1) -> str:
        """The last lines the process printed (its progress display in plain lines)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 4096))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
        return "\n".join(kept[-lines:])

    def stop(self) -> None:
        """Ask it to stop as Ctrl-C would (SIGTERM to its group: `run` takes it as Ctrl-C); returns at once."""
        if not self.running:
            return
        self.stopping = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Last resort after ``stop`` did not end it: SIGKILL to the group."""
        if self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)


class RunManager:
    """Starts, lists and stops background runs. ``command`` is the program before ``SPEC --storage URL``."""

    def __init__(self, command: Sequence[str] = RUN_COMMAND) -> None:
        self.command = tuple(command)
        self.runs: list[BackgroundRun] = []

    def start(self, spec_path: Path, url: str, extra: Sequence[str] = ()) -> BackgroundRun:
        spec_path = Path(spec_path).expanduser()
        if not spec_path.is_file():
            raise FileNotFoundError(f"no spec file at {spec_path}")
        study = study_name_of(spec_path)
        existing = self.for_study(study)
        if existing is not None:
            raise RuntimeError(f"study {study!r} is already running here (pid {existing.pid})")
        fd, log_name = tempfile.mkstemp(prefix="qco-run-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            process = subprocess.Popen(
                [*self.command, str(spec_path), "--storage", url, *extra],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"},
            )
        run = BackgroundRun(spec_path, study, url, process, Path(log_name))
        self.runs.append(run)
        return run

    def for_study(self, study: str) -> BackgroundRun | None:
        return next((r for r in reversed(self.runs) if r.study == study and r.running), None)

    @property
    def active(self) -> list[BackgroundRun]:
        return [r for r in self.runs if r.running]

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every run (``stop``), wait for them, kill what is left."""
        for run in self.active:
            run.stop()
        deadline = time.monotonic() + timeout
        for run in self.runs:
            if run.wait(max(0.1, deadline - time.monotonic())) is None:
                run.kill()
