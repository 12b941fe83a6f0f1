"""Opening the Optuna storage that holds every study, and keeping its RUNNING trials honest.

The storage is Optuna's own ``RDBStorage`` (SQLAlchemy), so a qco-tune database opens unchanged
in optuna-dashboard and the ``optuna`` CLI. SQLite (the default) suits one host and few writers;
PostgreSQL suits several GPUs or hosts sharing a study.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qco_tune.core.keys import (
    OWNER_HOST_ATTR,
    OWNER_PID_ATTR,
    REASON_ATTR,
    STATUS_ATTR,
)

if TYPE_CHECKING:
    import optuna

DEFAULT_STORAGE = "sqlite:///studies/qco.db"
STORAGE_ENV = "QCO_STORAGE"
HEARTBEAT_INTERVAL_S = 20
"""How often a running trial tells the storage it is alive."""
GRACE_PERIOD_S = 120
"""A RUNNING trial silent for this long is considered abandoned and failed."""


class StorageError(RuntimeError):
    """The storage cannot be opened or written; the message is one line with credentials masked."""


def storage_url(explicit: str | None = None) -> str:
    """``--storage`` if given, else ``$QCO_STORAGE``, else the SQLite file under ``studies/``."""
    return explicit or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for output, logs and the TUI)."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def _prepare_sqlite(url: str) -> None:
    """Create the SQLite file's folder and check that it can be written, before SQLAlchemy hides why not."""
    path_text = url.split(":///", 1)[1] if ":///" in url else ""
    if not path_text or path_text == ":memory:":
        return
    path = Path(path_text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the folder for {path}: {exc.strerror or exc}") from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise StorageError(f"storage {path} is not writable")


def open_storage(url: str | None = None) -> optuna.storages.RDBStorage:
    """Open (creating tables on first use) the Optuna RDB storage at ``url``.

    Raises ``StorageError`` with a one-line, credential-free reason when the database cannot be
    reached, the file cannot be written, or the URL is malformed.
    """
    import optuna
    import sqlalchemy.exc

    url = storage_url(url)
    if "://" not in url:
        raise StorageError(
            f"not a storage URL: {mask_url(url)!r} (e.g. sqlite:///studies/qco.db or postgresql+psycopg://...)"
        )
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        _prepare_sqlite(url)
        # Writers wait for each other instead of failing at once ("database is locked").
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat args
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        raise StorageError(f"cannot open storage {mask_url(url)}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def owner_attrs() -> dict[str, Any]:
    """Who runs a trial: stored on it so a restart on the same host can tell a dead owner at once."""
    return {OWNER_HOST_ATTR: socket.gethostname(), OWNER_PID_ATTR: os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose owner is gone; return their numbers.

    A trial owned by a dead process on this host is failed at once (after ``kill -9`` of the
    parent, say); one on another host only when its heartbeat is older than the grace period.
    Finished trials are never touched.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    recovered: list[int] = []
    host = socket.gethostname()
    stale_ids: set[int] = set()
    if hasattr(storage, "_get_stale_trial_ids"):
        stale_ids = set(storage._get_stale_trial_ids(study._study_id))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        same_host_dead = attrs.get(OWNER_HOST_ATTR) == host and not _pid_alive(int(attrs.get(OWNER_PID_ATTR, -1)))
        if not (same_host_dead or trial._trial_id in stale_ids):
            continue
        why = "owner process is gone" if same_host_dead else f"no heartbeat for over {GRACE_PERIOD_S} s"
        try:
            storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, f"interrupted: {why}")
            storage.set_trial_user_attr(trial._trial_id, STATUS_ATTR, "interrupted")
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                recovered.append(trial.number)
        except UpdateFinishedTrialError:
            continue  # another process finished or failed it first
    return recovered


class Heartbeat:
    """Context manager: records the trial's heartbeat every few seconds while the trial runs.

    Optuna runs heartbeats only under ``study.optimize``; with ask-and-tell we beat ourselves.
    """

    def __init__(self, storage: Any, trial_id: int, interval: float = HEARTBEAT_INTERVAL_S) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="qco-heartbeat", daemon=True)

    def _beat(self) -> None:
        while True:
            # A missed beat is not fatal; the next one may succeed.
            with contextlib.suppress(Exception):
                self._storage.record_heartbeat(self._trial_id)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
