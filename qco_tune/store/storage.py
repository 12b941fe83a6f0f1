"""Opening the Optuna storage that holds every study, and keeping its RUNNING trials honest.

The storage is Optuna's own ``RDBStorage`` (SQLAlchemy), so a qco-tune database opens unchanged
in optuna-dashboard and the ``optuna`` CLI. SQLite (the default) suits one host and few writers;
PostgreSQL suits several GPUs or hosts sharing a study.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import threading
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qco_tune.core.keys import (
    OWNER_HOST_ATTR,
    OWNER_PID_ATTR,
    OWNER_PID_NAMESPACE_ATTR,
    REASON_ATTR,
    STATUS_ATTR,
)
from qco_tune.core.paths import trial_dir_prefix

if TYPE_CHECKING:
    import optuna

DEFAULT_STORAGE = "sqlite:///studies/qco.db"
STORAGE_ENV = "QCO_STORAGE"
OPTUNA_STORAGE_ENV = "OPTUNA_STORAGE"
"""Read when ``QCO_STORAGE`` is unset, as the ``optuna`` CLI reads it."""
HEARTBEAT_INTERVAL_S = 20
"""How often a running trial tells the storage it is alive."""
GRACE_PERIOD_S = 120
"""A RUNNING trial silent for this long is considered abandoned and failed."""


class StorageError(RuntimeError):
    """The storage cannot be opened or written; the message is one line with credentials masked."""


def storage_url(explicit: str | None = None) -> str:
    """``--storage`` if given, else ``$QCO_STORAGE``, else ``$OPTUNA_STORAGE``, else the SQLite file under
    ``studies/``."""
    return explicit or os.environ.get(STORAGE_ENV) or os.environ.get(OPTUNA_STORAGE_ENV) or DEFAULT_STORAGE


_USERINFO = re.compile(r"(://[^:/@?#\s]*:)[^\s]*@(?=[^@]*$)")
"""``scheme://user:PASSWORD@host``: up to the last ``@``, which ends the user part (a password may hold one)."""
_PASSWORD_PARAM = re.compile(r"""(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|"[^"]*"|[^\s&;]*)""", re.IGNORECASE)
"""``?password=...`` or ``&password=...`` in a URL's query, and ``password=...`` in a libpq key=value DSN."""


def mask_url(url: str) -> str:
    """``url`` (or any text holding one) with every password replaced by ``***``: in the user part
    (``user:pw@``), as a query parameter (``?password=``, ``&sslpassword=``) or in a libpq DSN
    (``host=db password='p w'``). Safe for output, logs and the TUI."""
    return _PASSWORD_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def _passwords_in(url: str) -> list[str]:
    """The literal passwords ``url`` holds, so that a driver's message that repeats one can be masked too."""
    found = [m.group(0)[len(m.group(1)) : -1] for m in _USERINFO.finditer(url)]
    found += [m.group(2).strip("'\"") for m in _PASSWORD_PARAM.finditer(url)]
    return [form for p in found if len(p) >= 3 for form in {p, urllib.parse.unquote(p)}]


def mask_text(text: str, url: str) -> str:
    """A message about storage ``url`` with its passwords masked, wherever the driver put them."""
    text = mask_url(text)
    for secret in _passwords_in(url):
        text = text.replace(secret, "***")
    return text


def _sqlite_path(url: str) -> Path | None:
    path_text = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
    if not path_text or path_text == ":memory:" or path_text.startswith("file:"):
        return None
    return Path(path_text)


def _prepare_sqlite(url: str, *, create_folder: bool) -> Path | None:
    """Check the SQLite file's folder exists (creating it only for the default storage) and that the file can be
    written, before SQLite fails at the first commit with a message that names neither."""
    path = _sqlite_path(url)
    if path is None:
        return None
    folder = path.parent
    if create_folder:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the folder {folder} for the storage: {exc.strerror or exc}") from None
    if not folder.exists():
        raise StorageError(
            f"the folder {folder} does not exist: create it or correct the path (the storage file is created, "
            "not its folder)"
        )
    if not folder.is_dir():
        raise StorageError(f"{folder} is not a folder: the storage file {path} cannot be created there")
    if path.exists() and not os.access(path, os.W_OK):
        raise StorageError(f"the storage file {path} cannot be written (no write permission on the file)")
    if not os.access(folder, os.W_OK | os.X_OK):
        # SQLite writes a journal beside the file at every commit: without this the first write fails.
        raise StorageError(f"the storage file {path} cannot be written: its folder {folder} is not writable")
    return path


@contextlib.contextmanager
def _creating(path: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on the SQLite file while Optuna creates its tables, so that two processes
    opening one new storage at once do not both create them ("table studies already exists"): the
    second waits, then finds them. ``flock`` does not interact with SQLite's own (``fcntl``) locks."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    if path is None:
        yield
        return
    try:
        handle = open(path, "a")  # noqa: SIM115 (held open for the lock's life)
    except OSError as exc:
        raise StorageError(f"the storage file {path} cannot be written: {exc.strerror or exc}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_storage(url: str | None = None) -> optuna.storages.RDBStorage:
    """Open (creating tables on first use) the Optuna RDB storage at ``url``.

    Raises ``StorageError`` with a one-line, credential-free reason when the database cannot be
    reached, the file or its folder cannot be written or does not exist, or the URL is malformed.
    The default storage's folder is created; a folder named in a URL must exist (a mistyped path
    is refused, not created).
    """
    import optuna
    import sqlalchemy.exc

    url = storage_url(url)
    if "://" not in url:
        raise StorageError(
            f"not a storage URL: {mask_url(url)!r} (e.g. sqlite:///studies/qco.db or postgresql+psycopg://...)"
        )
    engine_kwargs: dict[str, Any] = {}
    sqlite_file: Path | None = None
    if url.startswith("sqlite"):
        sqlite_file = _prepare_sqlite(url, create_folder=url == DEFAULT_STORAGE)
        # Writers wait for each other instead of failing at once ("database is locked").
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings(), _creating(sqlite_file):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat args
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        raise StorageError(mask_text(f"cannot open storage {url}: {_one_line(exc)}", url)) from None


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _pid_namespace() -> str | None:
    """This kernel's boot id and this process's PID namespace (Linux), None where not known. A process
    id means one process only within both: containers sharing a host name have PID namespaces of their own."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def owner_attrs() -> dict[str, Any]:
    """Who runs a trial: stored on it so a restart in the same PID namespace can tell a dead owner at once."""
    attrs: dict[str, Any] = {OWNER_HOST_ATTR: socket.gethostname(), OWNER_PID_ATTR: os.getpid()}
    namespace = _pid_namespace()
    if namespace is not None:
        attrs[OWNER_PID_NAMESPACE_ATTR] = namespace
    return attrs


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_dead_here(attrs: dict[str, Any], host: str, namespace: str | None) -> int | None:
    """The owner's process id when it ran in this PID namespace (same host, boot and namespace) and is
    gone; None otherwise (alive, elsewhere, or recorded without a namespace: only the heartbeat can tell)."""
    if namespace is None or attrs.get(OWNER_HOST_ATTR) != host or attrs.get(OWNER_PID_NAMESPACE_ATTR) != namespace:
        return None
    pid = attrs.get(OWNER_PID_ATTR)
    if not isinstance(pid, int) or _pid_alive(pid):
        return None
    return pid


def _remove_trial_dirs(pid: int) -> None:
    """The temporary folders a killed process's trials left (``trial_dir_prefix``): no live process owns them."""
    for folder in Path(tempfile.gettempdir()).glob(trial_dir_prefix(pid) + "*"):
        shutil.rmtree(folder, ignore_errors=True)


def recover_stale_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose owner is gone; return their numbers.

    A trial whose owner ran in this PID namespace (same host, kernel boot and namespace) and is dead
    is failed at once (after ``kill -9`` of the parent, say), and its temporary folder removed; any
    other only when its heartbeat is older than the grace period (another host, another container of
    the same host name). Finished trials are never touched.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    recovered: list[int] = []
    host, namespace = socket.gethostname(), _pid_namespace()
    stale_ids: set[int] = set()
    if hasattr(storage, "_get_stale_trial_ids"):
        stale_ids = set(storage._get_stale_trial_ids(study._study_id))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        dead_pid = _owner_dead_here(trial.user_attrs, host, namespace)
        if dead_pid is None and trial._trial_id not in stale_ids:
            continue
        why = "owner process is gone" if dead_pid is not None else f"no heartbeat for over {GRACE_PERIOD_S} s"
        try:
            storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, f"interrupted: {why}")
            storage.set_trial_user_attr(trial._trial_id, STATUS_ATTR, "interrupted")
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                recovered.append(trial.number)
        except UpdateFinishedTrialError:
            continue  # another process finished or failed it first
        if dead_pid is not None:
            _remove_trial_dirs(dead_pid)
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
