"""How ``qco-tune run`` and ``qco-tune worker`` are stopped: SIGINT or SIGTERM, whatever the process inherited.

A process started in the background of a non-interactive shell (a script's ``&``, many job runners)
inherits SIGINT as ignored, and Python then leaves it ignored: Ctrl-C semantics would be lost. Both
signals are turned into ``KeyboardInterrupt``, so the loop stops the running trial's child, records
the trial as interrupted and queues its configuration again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a run gracefully (a job runner's SIGTERM, a terminal's or the TUI's SIGINT)."""


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def stop_signals_as_interrupt() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``KeyboardInterrupt``; the previous handlers come back after.

    Outside the main thread (where Python cannot install handlers) it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["STOP_SIGNALS", "stop_signals_as_interrupt"]
