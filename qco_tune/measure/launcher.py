"""The one launcher of child processes: trials, the capability probe and preset builds.

Every child is ``python -m MODULE ARGS`` with this package importable, in its own session (a
terminal's Ctrl-C reaches only the parent, which then ends the child), killed by the kernel when the
parent dies (even by ``kill -9``: a child must never be left holding the GPU), and ended with its
whole process group (compile workers included). The phase protocol is one line format on the
child's stdout: ``QCO-PHASE <text>``, flushed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

PHASE_PREFIX = "QCO-PHASE "
"""A line of a child's stdout that starts so reports the phase it is in, not output."""


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


def launch(module: str, *args: str, merge_stderr: bool = True) -> subprocess.Popen[str]:
    """Start ``python -m module args``: its own session, dies with the parent, text stdout (stderr merged)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        errors="replace",
        env=child_env(),
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
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


def phase_of(line: str) -> str | None:
    """The phase a ``QCO-PHASE`` line reports, or None for any other line."""
    return line[len(PHASE_PREFIX) :].strip() if line.startswith(PHASE_PREFIX) else None


def report_phase(text: str) -> None:
    """In a child: tell the parent which phase it is in (one flushed ``QCO-PHASE`` line)."""
    print(f"{PHASE_PREFIX}{text}", flush=True)


def signal_name(returncode: int) -> str:
    """``SIGSEGV`` for a child killed by signal 11 (``returncode`` -11)."""
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


__all__ = ["PHASE_PREFIX", "child_env", "kill_group", "launch", "phase_of", "report_phase", "signal_name"]
