"""Reading an Optuna storage into plain values (``store.studydata``) for the TUI. Headless: no textual here.

Two readers give the same answer:

* ``SqlReader`` (default) reads only the columns it needs straight from Optuna's tables with
  SQLAlchemy, read-only (SQLite opens with ``mode=ro``), so a study of 10,000 trials loads in a
  fraction of a second;
* ``OptunaReader`` (``qco-tune tui --optuna-api``) goes through ``optuna.load_study`` and
  ``get_trials``: slower, but independent of Optuna's table layout.

Both feed ``qco_tune.search.pareto.summarize``, so the TUI agrees with ``qco-tune show`` on every category.
Every failure to read becomes a ``DataError`` with one line for the user (credentials masked).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qco_tune.core.keys import CONFIG_ATTR, SPEC_ATTR
from qco_tune.search.pareto import ParetoSummary, summarize
from qco_tune.store.constraints import LIST_KEY, named_constraints
from qco_tune.store.studydata import (
    FINISHED_STATES,
    LIGHT_ATTRS,
    TRIAL_ATTRS,
    DataError,
    Stamp,
    StorageReader,
    StoredTrial,
    StudyData,
    StudyOverview,
    as_dict,
    build_study,
    overview_of,
)

if TYPE_CHECKING:
    import sqlalchemy


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        raise DataError("an in-memory SQLite storage cannot be shared with the TUI; give a file")
    return Path(path.split("?", 1)[0])


def _masked(url: str) -> str:
    from qco_tune.store.storage import mask_url

    return mask_url(url)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _explain(url: str, exc: BaseException) -> DataError:
    text = _one_line(exc)
    if "locked" in text or "busy" in text:
        return DataError(f"storage {_masked(url)} is locked by another process (retrying): {text}")
    if "no such table" in text or ("does not exist" in text and "relation" in text):
        return DataError(f"{_masked(url)} is not an Optuna storage (no Optuna tables)")
    if "unable to open" in text:
        return DataError(f"storage {_masked(url)} cannot be opened: it was moved or deleted?")
    return DataError(f"cannot read storage {_masked(url)}: {text}")


def _parse_json(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _parse_many(texts: list[Any]) -> list[Any]:
    """JSON values parsed in one call (far faster than one call each); one by one if any is malformed."""
    if all(isinstance(t, str) for t in texts):
        try:
            parsed = json.loads("[" + ",".join(texts) + "]")
            if isinstance(parsed, list) and len(parsed) == len(texts):
                return parsed
        except ValueError:
            pass
    return [_parse_json(t) for t in texts]


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime.datetime) else str(value or "")


class SqlReader:
    """Reads Optuna's tables directly (SELECT only). SQLite files open read-only."""

    def __init__(self, url: str, *, lock_timeout: float = 5.0) -> None:
        self.url = url
        self._lock_timeout = lock_timeout
        self._path = _sqlite_path(url)
        self._engine: sqlalchemy.Engine | None = None
        self._overviews: dict[str, StudyOverview] = {}

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> sqlalchemy.Connection:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        if self._path is not None and not self._path.exists():
            raise DataError(f"no storage at {self._path} (yet): `qco-tune run` creates it")
        if self._engine is None:
            if self._path is not None:
                uri = self._path.resolve().as_uri() + "?mode=ro"
                timeout = self._lock_timeout

                def creator() -> sqlite3.Connection:
                    return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)

                # NullPool: every read opens the file anew, so a deleted or replaced file is noticed.
                self._engine = sqlalchemy.create_engine("sqlite://", creator=creator, poolclass=NullPool)
            else:
                self._engine = sqlalchemy.create_engine(self.url, pool_pre_ping=True)
        return self._engine.connect()

    def _query(self, sql: str, **params: Any) -> list[Any]:
        import sqlalchemy

        try:
            with self._connect() as conn:
                return list(conn.execute(sqlalchemy.text(sql), params))
        except DataError:
            raise
        except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise _explain(self.url, exc) from None

    # -- studies --------------------------------------------------------------------------------
    def _study_ids(self) -> dict[str, int]:
        return {name: sid for sid, name in self._query("SELECT study_id, study_name FROM studies ORDER BY study_id")}

    def _study_id(self, name: str) -> int:
        rows = self._query("SELECT study_id FROM studies WHERE study_name = :name", name=name)
        if not rows:
            raise DataError(f"no study named {name!r} in {_masked(self.url)} (deleted?)")
        return int(rows[0][0])

    def _study_attrs(self, study_id: int) -> dict[str, Any]:
        rows = self._query("SELECT key, value_json FROM study_user_attributes WHERE study_id = :sid", sid=study_id)
        return {key: _parse_json(value) for key, value in rows}

    def stamps(self) -> dict[str, Stamp]:
        rows = self._query(
            "SELECT s.study_name, COUNT(t.trial_id), "
            "SUM(CASE WHEN t.state IN ('COMPLETE', 'FAIL', 'PRUNED') THEN 1 ELSE 0 END), "
            "MAX(t.datetime_complete), MAX(t.datetime_start) "
            "FROM studies s LEFT JOIN trials t ON t.study_id = s.study_id GROUP BY s.study_id, s.study_name"
        )
        return {name: Stamp(int(n or 0), int(f or 0), f"{_iso(c)}|{_iso(st)}") for name, n, f, c, st in rows}

    def stamp(self, name: str) -> Stamp:
        sid = self._study_id(name)
        rows = self._query(
            "SELECT COUNT(trial_id), SUM(CASE WHEN state IN ('COMPLETE', 'FAIL', 'PRUNED') THEN 1 ELSE 0 END), "
            "MAX(datetime_complete), MAX(datetime_start) FROM trials WHERE study_id = :sid",
            sid=sid,
        )
        n, f, c, st = rows[0]
        return Stamp(int(n or 0), int(f or 0), f"{_iso(c)}|{_iso(st)}")

    def list_studies(self) -> list[StudyOverview]:
        """Every study, newest stamps only recomputed (light load: no configuration parsing)."""
        stamps = self.stamps()
        ids = self._study_ids()
        result = []
        for name, sid in ids.items():
            cached = self._overviews.get(name)
            if cached is None or cached.stamp != stamps.get(name):
                attrs = self._study_attrs(sid)
                trials = self._trials(sid, light=True)
                stamp = stamps.get(name, Stamp())
                cached = overview_of(name, attrs, _summary(attrs, trials), stamp)
                self._overviews[name] = cached
            result.append(cached)
        return result

    def load_study(self, name: str, *, partial: bool = False) -> StudyData:
        """The study; ``partial`` first reads only what the plot needs (no configuration or measurement)."""
        sid = self._study_id(name)
        stamp = self.stamp(name)
        attrs = self._study_attrs(sid)
        trials = self._trials(sid, light=partial)
        return build_study(name, attrs, trials, stamp, partial=partial)

    # -- trials ---------------------------------------------------------------------------------
    def _trials(self, sid: int, *, light: bool) -> list[StoredTrial]:
        """Trials of a study; ``light`` reads only what the overview needs (no configuration, measurement)."""
        import sqlalchemy

        sid = int(sid)  # inlined below: the bulk reads go through the driver's cursor, without bound parameters
        join = f"JOIN trials t ON t.trial_id = a.trial_id WHERE t.study_id = {sid}"
        keys = LIGHT_ATTRS if light else TRIAL_ATTRS
        key_list = ", ".join(f"'{k}'" for k in keys)
        try:
            with self._connect() as conn:
                cursor = conn.connection.cursor()

                def q(sql: str) -> list[Any]:
                    cursor.execute(sql)
                    return list(cursor.fetchall())

                base = q(
                    "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
                    f"WHERE study_id = {sid} ORDER BY number"
                )
                values = q(f"SELECT a.trial_id, a.objective, a.value, a.value_type FROM trial_values a {join}")
                attrs = q(
                    "SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a "
                    f"{join} AND a.key IN ({key_list})"
                )
                system = q(
                    f"SELECT a.trial_id, a.key, a.value_json FROM trial_system_attributes a {join} "
                    f"AND a.key LIKE '{LIST_KEY}%'"
                )
                cursor.close()
        except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise _explain(self.url, exc) from None
        except Exception as exc:  # another driver's own error class
            raise _explain(self.url, exc) from None
        by_id: dict[int, StoredTrial] = {}
        for trial_id, number, state, start, complete in base:
            by_id[trial_id] = StoredTrial(
                number=int(number),
                state=str(getattr(state, "name", state)),
                datetime_start=_as_datetime(start),
                datetime_complete=_as_datetime(complete),
            )
        _fill_values(by_id, values)
        for (trial_id, key, _), value in zip(attrs, _parse_many([v for _, _, v in attrs]), strict=True):
            if trial_id in by_id:
                by_id[trial_id].user_attrs[key] = value
        _fill_constraints(by_id, system)
        if not light:
            self._fill_params(by_id, [tid for tid, t in by_id.items() if CONFIG_ATTR not in t.user_attrs])
        return list(by_id.values())

    def _fill_params(self, by_id: dict[int, StoredTrial], trial_ids: list[int]) -> None:
        """Parameters, only for trials without ``qco.config`` (written by older versions)."""
        from optuna.distributions import json_to_distribution

        dists: dict[str, Any] = {}
        for i in range(0, len(trial_ids), 500):
            chunk = trial_ids[i : i + 500]
            marks = ", ".join(str(int(t)) for t in chunk)
            rows = self._query(
                "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params "
                f"WHERE trial_id IN ({marks})"
            )
            for trial_id, pname, pvalue, dist_json in rows:
                try:
                    dist = dists.get(dist_json) or dists.setdefault(dist_json, json_to_distribution(dist_json))
                    by_id[trial_id].params[pname] = dist.to_external_repr(pvalue)
                except (ValueError, KeyError, IndexError, TypeError):
                    continue


def _as_datetime(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _fill_values(by_id: dict[int, StoredTrial], rows: Iterable[Any]) -> None:
    per: dict[int, dict[int, float]] = {}
    for trial_id, objective, value, value_type in rows:
        kind = str(getattr(value_type, "name", value_type))
        number = float("inf") if kind == "INF_POS" else float("-inf") if kind == "INF_NEG" else float(value)
        per.setdefault(trial_id, {})[int(objective)] = number
    for trial_id, objs in per.items():
        if trial_id in by_id:
            by_id[trial_id].values = [objs[k] for k in sorted(objs)]


def _fill_constraints(by_id: dict[int, StoredTrial], rows: Iterable[Any]) -> None:
    """Each trial's constraints by name, from both forms Optuna and optuna-dashboard read (``store.constraints``)."""
    per: dict[int, dict[str, Any]] = {}
    for trial_id, key, value in rows:
        parsed = _parse_json(value)
        if trial_id in by_id and parsed is not None:
            per.setdefault(trial_id, {})[key] = parsed
    for trial_id, attrs in per.items():
        with contextlib.suppress(TypeError, ValueError):
            by_id[trial_id].constraints.update(named_constraints(attrs))


def _summary(attrs: Mapping[str, Any], trials: Iterable[StoredTrial]) -> ParetoSummary:
    spec = as_dict(attrs.get(SPEC_ATTR))
    budget = spec.get("vram_budget")
    return summarize(trials, int(budget) if isinstance(budget, (int, float)) else None)


class OptunaReader:
    """The same answers through Optuna's public API (``--optuna-api``): slower, layout-independent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._path = _sqlite_path(url)
        self._storage: Any = None

    def _open(self) -> Any:
        import optuna

        if self._path is not None and not self._path.exists():
            raise DataError(f"no storage at {self._path} (yet): `qco-tune run` creates it")
        if self._storage is None:
            try:
                self._storage = optuna.storages.RDBStorage(self.url, skip_table_creation=True)
            except Exception as exc:  # optuna raises several kinds for a bad URL or schema
                raise _explain(self.url, exc) from None
        return self._storage

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyError:
            raise DataError(f"no study named {args[0] if args else '?'!r} in {_masked(self.url)}") from None
        except DataError:
            raise
        except Exception as exc:  # SQLAlchemy and optuna errors alike become one line
            raise _explain(self.url, exc) from None

    def _frozen(self, name: str) -> tuple[dict[str, Any], list[Any]]:
        import optuna

        storage = self._open()

        def load() -> tuple[dict[str, Any], list[Any]]:
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                raise DataError(f"no study named {name!r} in {_masked(self.url)} (deleted?)") from None
            return dict(study.user_attrs), study.get_trials(deepcopy=False)

        return self._call(load)

    def stamps(self) -> dict[str, Stamp]:
        import optuna

        storage = self._open()
        names = [s.study_name for s in self._call(optuna.get_all_study_summaries, storage, include_best_trial=False)]
        return {name: _stamp_of(self._frozen(name)[1]) for name in names}

    def list_studies(self) -> list[StudyOverview]:
        result = []
        for name in self.stamps():
            attrs, trials = self._frozen(name)
            result.append(overview_of(name, attrs, _summary(attrs, trials), _stamp_of(trials)))
        return result

    def load_study(self, name: str, *, partial: bool = False) -> StudyData:
        """The study (``partial`` is ignored: Optuna reads every attribute anyway)."""
        attrs, trials = self._frozen(name)
        return build_study(name, attrs, trials, _stamp_of(trials))


def _stamp_of(trials: list[Any]) -> Stamp:
    finished = [t for t in trials if t.state.name in FINISHED_STATES]
    last_c = max((t.datetime_complete for t in trials if t.datetime_complete), default=None)
    last_s = max((t.datetime_start for t in trials if t.datetime_start), default=None)
    return Stamp(len(trials), len(finished), f"{_iso(last_c)}|{_iso(last_s)}")


def open_reader(url: str, *, optuna_api: bool = False, lock_timeout: float = 5.0) -> StorageReader:
    """The reader for ``url``: direct SQL by default, Optuna's API with ``optuna_api``."""
    if "://" not in url:
        raise DataError(f"not a storage URL: {_masked(url)!r} (e.g. sqlite:///studies/qco.db)")
    return OptunaReader(url) if optuna_api else SqlReader(url, lock_timeout=lock_timeout)
