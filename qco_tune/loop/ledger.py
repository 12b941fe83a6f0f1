"""The study's ledger: which configurations ran, failed or are queued, requeueing, recovery and the plan's queue."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import (
    ATTEMPT_ATTR,
    BASELINE_ATTR,
    CONFIG_ATTR,
    DEFERRED_STATUS,
    MEASUREMENT_ATTR,
    MEMORY_ATTR,
    REASON_ATTR,
    REMEASURE_OF_ATTR,
    RETRY_OF_ATTR,
    STATUS_ATTR,
)
from qco_tune.loop.context import MAX_ATTEMPTS, REFERENCE_BASELINES, Observer
from qco_tune.store.storage import recover_stale_trials

if TYPE_CHECKING:
    import optuna

    from qco_tune.search.planner import Done
    from qco_tune.search.space import SearchSpace


DEFERRED = DEFERRED_STATUS


@dataclass
class Ledger:
    """What a study has spent: configurations measured, failed or running now, and the trial count."""

    keys: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Configuration key → (trial number, ``measured`` | ``failed`` | ``running``)."""
    counted: int = 0
    """Trials that count towards the target: finished, failed, and running elsewhere. Skipped
    proposals, interrupted trials (which are handed back to the queue) and the reference do not count."""
    running: int = 0
    """Of ``counted``, those running now (not done yet)."""

    @property
    def done(self) -> int:
        """Trials of the target that have finished: what a resumed run says it starts from."""
        return self.counted - self.running


def ledger(study: optuna.Study, exclude: int | None = None) -> Ledger:
    """The study's ``Ledger``, leaving out trial number ``exclude`` (the caller's own, just asked)."""
    from optuna.trial import TrialState

    book = Ledger()
    label = {TrialState.COMPLETE: "measured", TrialState.FAIL: "failed", TrialState.RUNNING: "running"}
    for trial in study.get_trials(deepcopy=False, states=tuple(label)):
        status = trial.user_attrs.get(STATUS_ATTR)
        if trial.number == exclude or status == DEFERRED or (status == "interrupted" and not _given_up(trial)):
            continue
        if trial.user_attrs.get(REMEASURE_OF_ATTR) is not None:
            continue  # a measurement at the full step count after the search: not a trial of the target
        data = trial.user_attrs.get(CONFIG_ATTR)
        if trial.state == TrialState.RUNNING and not isinstance(data, dict):
            # Asked by another process, not yet decided. One asked before ours with queued parameters
            # (two workers may queue the same plan at once) will run them unless skipped: ours would
            # repeat it. The later one gives way, so a configuration runs once.
            params = trial.system_attrs.get("fixed_params")
            if exclude is not None and trial.number < exclude and isinstance(params, dict):
                with contextlib.suppress(ValueError, TypeError):
                    book.keys.setdefault(TrialConfig.from_params(dict(params)).key(), (trial.number, "running"))
            continue
        if trial.user_attrs.get(BASELINE_ATTR) not in REFERENCE_BASELINES:
            book.counted += 1  # the reference is measurement, not a candidate: never a trial of the target
            book.running += trial.state == TrialState.RUNNING
        if isinstance(data, dict):
            try:
                book.keys.setdefault(TrialConfig.from_dict(data).key(), (trial.number, label[trial.state]))
            except ValueError:
                continue
    return book


def _given_up(trial: Any) -> bool:
    """An interrupted trial that was its configuration's last attempt: it counts, as a failure."""
    return int(trial.user_attrs.get(ATTEMPT_ATTR, 1)) >= MAX_ATTEMPTS


def requeue(study: optuna.Study, trial_id: int) -> None:
    """Hand an interrupted trial's configuration back to the queue so that it is measured later,
    unless it was the configuration's ``MAX_ATTEMPTS``-th interrupted run.

    Call it once, from the process whose state change failed the trial (a state change is atomic in
    the storage, so no two processes both requeue one trial).
    """
    frozen = study._storage.get_trial(trial_id)
    if not frozen.params or _given_up(frozen):
        return
    attempt = int(frozen.user_attrs.get(ATTEMPT_ATTR, 1)) + 1
    attrs: dict[str, Any] = {RETRY_OF_ATTR: frozen.number, ATTEMPT_ATTR: attempt}
    if frozen.user_attrs.get(BASELINE_ATTR):
        attrs[BASELINE_ATTR] = frozen.user_attrs[BASELINE_ATTR]
    study.enqueue_trial(dict(frozen.params), user_attrs=attrs)


def cost_floors(study: optuna.Study) -> dict[str, float]:
    """Configuration key → the longest run of it cut off before it finished, in seconds: what it costs at least."""
    from optuna.trial import TrialState

    floors: dict[str, float] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        data = trial.user_attrs.get(CONFIG_ATTR)
        if trial.user_attrs.get(STATUS_ATTR) != "interrupted" or not isinstance(data, dict):
            continue
        if trial.datetime_start is None or trial.datetime_complete is None:
            continue
        try:
            key = TrialConfig.from_dict(data).key()
        except ValueError:
            continue
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        floors[key] = max(floors.get(key, 0.0), seconds)
    return floors


def defer(study: optuna.Study, trial: optuna.Trial, reason: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Put a just-asked retry aside without running it: failed as ``DEFERRED`` (not a trial of the target,
    not a tried configuration). Returns what ``requeue_deferred`` queues again."""
    from optuna.trial import TrialState

    frozen = study._storage.get_trial(trial._trial_id)
    params = dict(frozen.system_attrs.get("fixed_params") or frozen.params)
    attrs = dict(frozen.user_attrs)
    trial.set_user_attr(STATUS_ATTR, DEFERRED)
    trial.set_user_attr(REASON_ATTR, reason)
    study.tell(trial, state=TrialState.FAIL)
    return params, attrs


def complete_queued(study: optuna.Study, space: SearchSpace) -> int:
    """Give each waiting trial a value for every knob of ``space`` its queued parameters lack: the knob's
    default. A trial queued by an older version (before the knob existed) would otherwise have the
    missing knobs picked by the sampler when it is asked. Returns how many trials were completed."""
    from optuna.trial import TrialState

    completed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        queued = dict(trial.system_attrs.get("fixed_params") or {})
        try:
            config = TrialConfig.from_params(queued)
        except (ValueError, TypeError):
            continue  # not a configuration of this version: asking it fails it with the reason
        whole = {**space.params(config), **queued}
        if whole != queued:
            study._storage.set_trial_system_attr(trial._trial_id, "fixed_params", whole)
            completed += 1
    return completed


def requeue_deferred(study: optuna.Study, deferred: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Queue again the retries ``defer`` put aside, as they were (their attempt count unchanged)."""
    while deferred:
        params, attrs = deferred.pop(0)
        study.enqueue_trial(params, user_attrs=attrs)


def planner_trials(study: optuna.Study) -> list[Done]:
    """The study's finished trials as the planner sees them (interrupted ones left out)."""
    from optuna.trial import TrialState

    from qco_tune.search.planner import Done

    done = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        data = trial.user_attrs.get(CONFIG_ATTR)
        if not isinstance(data, dict) or trial.user_attrs.get(STATUS_ATTR) in ("interrupted", DEFERRED):
            continue
        try:
            config = TrialConfig.from_dict(data)
        except ValueError:
            continue
        memory_bytes = trial.user_attrs.get(MEMORY_ATTR)
        ok = trial.state == TrialState.COMPLETE and bool(trial.values) and memory_bytes is not None
        measurement = trial.user_attrs.get(MEASUREMENT_ATTR) or {}
        wall = (measurement.get("extra") or {}).get("wall_s") if isinstance(measurement, dict) else None
        constraints = trial.constraints or {}
        excess = constraints.values() if isinstance(constraints, dict) else constraints
        done.append(
            Done(
                number=trial.number,
                config=config,
                latency_s=float(trial.values[0]) if ok and trial.values else None,
                memory_bytes=float(memory_bytes) if ok and memory_bytes is not None else None,
                feasible=ok and all(c <= 0 for c in excess),
                seconds=float(wall) if isinstance(wall, (int, float)) else None,
                seeded=bool(trial.user_attrs.get(BASELINE_ATTR)),
            )
        )
    return done


def is_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether ``trial`` is still RUNNING in the storage (not yet told by this process or recovered by another)."""
    from optuna.trial import TrialState

    return bool(study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING)


def fail_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Ctrl-C between ask and tell: the asked trial must not stay RUNNING, and goes back to the queue."""
    from optuna.trial import TrialState

    try:
        trial.set_user_attr(REASON_ATTR, "interrupted (Ctrl-C or SIGTERM)")
        trial.set_user_attr(STATUS_ATTR, "interrupted")
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        requeue(study, trial._trial_id)
    except Exception:  # the next run's recovery fails it instead
        pass


def recover(study: optuna.Study, observer: Observer) -> list[int]:
    """Fail the trials whose owner is gone and hand their configurations back to the queue."""
    numbers = recover_stale_trials(study)
    for number in numbers:
        requeue(study, study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number))
    if numbers:
        observer.message(f"recovered abandoned trial(s) {', '.join(map(str, numbers))}: failed, and queued again")
    return numbers
