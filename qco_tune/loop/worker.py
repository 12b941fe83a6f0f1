"""``qco-tune worker``: one more GPU (or host) takes trials of studies in a shared storage.

Optuna's RDB storage is the whole distributed engine: workers ask and tell trials of the same
study through it (PostgreSQL for several hosts; SQLite for a few workers on one host). A worker
that dies is noticed by heartbeat (or at once, on its own host, by its dead process id): its trial
is failed and queued again for another worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qco_tune.core.compile_artifacts import artifacts_root
from qco_tune.core.keys import MODEL_ATTR, SPEC_ATTR
from qco_tune.core.modelref import resolve_model
from qco_tune.core.records import Capabilities, ModelInfo
from qco_tune.core.spec import spec_from_dict
from qco_tune.loop.context import (
    FAULTS_ENV,
    Observer,
    RunResult,
    SilentObserver,
    StudyContext,
    StudyError,
    parse_faults,
)
from qco_tune.loop.ledger import ledger
from qco_tune.loop.remeasure import remeasure_front
from qco_tune.loop.setup import check_gpu_kind, gpu_kind, quiet_optuna, record_gpu_kind, study_spaces
from qco_tune.loop.signals import stop_signals_as_interrupt
from qco_tune.loop.study import run_loop
from qco_tune.store.storage import mask_url, open_storage, storage_url

if TYPE_CHECKING:
    import optuna


@dataclass
class WorkerResult:
    """What a worker did before it stopped."""

    ran: dict[str, int] = field(default_factory=dict)
    """Trials run per study."""
    stopped: str = ""


def open_studies(storage: Any, names: tuple[str, ...]) -> list[str]:
    """Names of the studies to serve: the named ones (which must exist) or all with work left."""
    import optuna

    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    known = {s.study_name for s in summaries}
    missing = [n for n in names if n not in known]
    if missing:
        raise StudyError(f"no study named {missing[0]!r} in this storage (create it with `qco-tune run SPEC`)")
    return list(names) if names else sorted(known)


def _context_for(
    study: optuna.Study, caps: Capabilities, observer: Observer, compile_artifacts: Path | None = None
) -> StudyContext:
    stored = study.user_attrs.get(SPEC_ATTR)
    if not isinstance(stored, dict):
        raise StudyError(f"study {study.study_name!r} was not made by qco-tune (no stored spec)")
    spec = spec_from_dict(stored)
    model = study_model(study, resolve_model(spec.model, spec.weights, spec.revision))
    space, local = study_spaces(study, spec, model, caps)
    faults = parse_faults(os.environ.get(FAULTS_ENV))
    ctx = StudyContext(spec, model, caps, space, study, observer, faults, local_space=local)
    ctx.compile_artifacts = compile_artifacts
    ctx.restore_reference = True  # a worker on another host has no reference output yet
    return ctx


def study_model(study: optuna.Study, model: ModelInfo) -> ModelInfo:
    """``model`` with the component traits the study was created with (its space's), else those read here."""
    stored = study.user_attrs.get(MODEL_ATTR)
    if isinstance(stored, dict):
        traits = {c.name: c.traits for c in ModelInfo.from_dict(stored).components if c.traits is not None}
        if traits:
            return model.with_traits(traits)
    from qco_tune.measure.runner import inspect_model

    return inspect_model(model)


def has_work(study: optuna.Study) -> bool:
    """Whether the study still wants trials (its target not reached, counting trials running elsewhere)."""
    target = (study.user_attrs.get(SPEC_ATTR) or {}).get("trials")
    return target is None or ledger(study).counted < target


def run_worker(
    *,
    url: str | None = None,
    study_names: tuple[str, ...] = (),
    caps: Capabilities | None = None,
    observer: Observer | None = None,
    poll_s: float = 30.0,
    exit_when_idle: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    compile_artifacts: str | os.PathLike[str] | None = None,
) -> WorkerResult:
    """Serve studies until stopped (SIGTERM or SIGINT, `loop.signals`), or until idle with ``exit_when_idle``.

    ``compile_artifacts``: the folder of the studies' portable compile artefacts (default: beside a
    SQLite storage file, else this host's qco-tune cache; name a shared folder for PostgreSQL hosts).
    """
    import optuna

    from qco_tune.measure.runner import probe_capabilities

    quiet_optuna()
    observer = observer or SilentObserver()
    storage = open_storage(url)
    caps = caps or probe_capabilities(on_slow=observer.message)
    artifacts = artifacts_root(storage_url(url), compile_artifacts)
    result = WorkerResult()
    observer.message(f"worker on {gpu_kind(caps)} serving {mask_url(storage_url(url))}")
    with stop_signals_as_interrupt():
        try:
            while True:
                worked = False
                for name in open_studies(storage, study_names):
                    study = optuna.load_study(study_name=name, storage=storage)
                    if not has_work(study):
                        continue
                    try:
                        check_gpu_kind(study, caps)
                    except StudyError:
                        if study_names:
                            raise  # asked for by name: say why not
                        continue  # serving all studies: leave it to workers of its GPU kind
                    record_gpu_kind(study, caps)
                    ctx = _context_for(study, caps, observer, artifacts)
                    run = RunResult(study_name=name)
                    run_loop(ctx, run)
                    if run.stopped in ("trials", "exhausted"):
                        remeasure_front(ctx, run)
                    result.ran[name] = result.ran.get(name, 0) + run.ran
                    worked = worked or run.ran > 0
                if not worked:
                    if exit_when_idle:
                        result.stopped = "idle"
                        return result
                    sleep(poll_s)
        except KeyboardInterrupt:
            result.stopped = "interrupted"
            return result
