"""One trial of the loop: whether it runs (rules, budget), its request, running it and telling Optuna."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qco_tune.core.compile_artifacts import study_artifacts_dir
from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    FINGERPRINT_ATTR,
    MEASUREMENT_ATTR,
    MEMORY_ATTR,
    PREDICTED_ATTR,
    PREDICTED_HOST_ATTR,
    PREDICTED_RAW_ATTR,
    REASON_ATTR,
    RETRY_OF_ATTR,
    STATUS_ATTR,
)
from qco_tune.core.paths import cache_dir
from qco_tune.core.records import Measurement, TrialRequest
from qco_tune.core.studyspec import StudySpec
from qco_tune.core.units import format_size
from qco_tune.loop.context import GIB, OFFLOAD_REFERENCE, PSNR_CAP, REFERENCE, REFERENCE_BASELINES, StudyContext
from qco_tune.loop.ledger import Ledger, cost_floors, defer, planner_trials, requeue
from qco_tune.loop.setup import fingerprint, reference_dir, study_compile_cache, trial_workload
from qco_tune.measure.runner import TrialInterrupted
from qco_tune.search import memory
from qco_tune.search.calibration import calibrate
from qco_tune.search.pareto import row_from_trial
from qco_tune.search.recipe_order import held_recipes_due
from qco_tune.search.steps import extrapolate
from qco_tune.store.constraints import record_constraints
from qco_tune.store.storage import Heartbeat, owner_attrs

if TYPE_CHECKING:
    import optuna


def skip_trial(ctx: StudyContext, trial: optuna.Trial, config: TrialConfig, reason: str, over_gib: float = 1.0) -> None:
    """Record ``config`` as not run (PRUNED, with its reason) and its constraint as exceeded, so TPE learns."""
    from optuna.trial import TrialState

    trial.set_user_attr(CONFIG_ATTR, config.to_dict())
    trial.set_user_attr(REASON_ATTR, reason)
    trial.set_user_attr(STATUS_ATTR, "skipped")
    record_constraints(trial, {"vram": max(over_gib, 1e-3)})
    ctx.study.tell(trial, state=TrialState.PRUNED)
    ctx.observer.trial_skipped(trial.number, config, reason)


def why_not_run(
    ctx: StudyContext, config: TrialConfig, done: dict[str, tuple[int, str]], *, check_budget: bool = True
) -> tuple[str, float] | None:
    """A reason (and constraint excess in GiB) not to run ``config``, or None when it should run.

    ``check_budget=False`` leaves out the memory model's budget check (``_over_budget``): for a trial
    that is measurement rather than a candidate (the reference), which runs whatever its prediction.
    """
    violations = ctx.space.violations(config)
    if violations:
        return "invalid: " + "; ".join(violations), 1.0
    local = ctx.local_space.violations(config) if ctx.local_space is not None else []
    if local:
        return "cannot run on this machine: " + "; ".join(local), 1.0
    previous = done.get(config.key())
    if previous is not None:
        number, state = previous
        return f"duplicate of trial {number} ({state})", 1.0
    return _over_budget(ctx, config) if check_budget else None


def _over_budget(ctx: StudyContext, config: TrialConfig) -> tuple[str, float] | None:
    """The skip reason when ``config`` is predicted over the budget by more than the model's own error
    on this study (``memory.skip_margin``: its calibration's residuals, or the uncalibrated margin)."""
    prediction = memory.predict(ctx.model, config, ctx.spec, ctx.caps, ctx.calibration)
    check = memory.budget_check(prediction, ctx.spec.vram_budget)
    if check is None or not check.over:
        return None
    return check.reason(), check.excess_gib


def recalibrate(ctx: StudyContext) -> None:
    """Fit the memory model's corrections on the study's finished trials (cheap: a few small sums)."""
    from optuna.trial import TrialState

    trials = ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ctx.calibration = calibrate(map(row_from_trial, trials), ctx.model, ctx.spec, ctx.caps)


def study_compile_artifacts(ctx: StudyContext) -> str | None:
    """The study's artefact folder that its trials load from and save to; None without one, or when the
    spec asks for cold compiles (``compile_cache = false``: artefacts would make them warm)."""
    if ctx.compile_artifacts is None or not ctx.spec.compile_cache:
        return None
    return str(study_artifacts_dir(ctx.compile_artifacts, ctx.spec.name))


def trial_request(
    ctx: StudyContext, config: TrialConfig, number: int, baseline: str | None = None, full: bool = False
) -> TrialRequest:
    """The child's request. A reference trial runs without the budget cap (its measured peak still
    decides feasibility), so that it defines the study's reference output wherever the GPU allows."""
    spec = ctx.spec
    reference = baseline in REFERENCE_BASELINES
    workload = trial_workload(spec, full)
    return TrialRequest(
        model=ctx.model,
        config=config,
        workload=workload,
        dtype=spec.dtype,
        device="cuda" if ctx.caps.cuda else "cpu",
        memory_limit=spec.vram_budget if ctx.caps.cuda and not reference else None,
        timed_calls=spec.timed_calls,
        max_timed_calls=spec.max_timed_calls,
        warmup_calls=spec.warmup_calls,
        trial_number=number,
        cache_dir=str(cache_dir()),
        compile_cache_dir=str(study_compile_cache(spec.name, ctx.caps)) if spec.compile_cache else None,
        fresh_compile_cache=not spec.compile_cache,
        compile_artifacts_dir=study_compile_artifacts(ctx),
        fault=ctx.faults.get(number),  # type: ignore[arg-type]
        reference_dir=str(reference_dir(spec, workload)),
        save_reference=reference,
    )


@dataclass
class Outcome:
    """What a measurement means for its trial: attributes, constraints, objective values, feasibility."""

    attrs: dict[str, Any]
    constraints: dict[str, float] = field(default_factory=dict)
    values: list[float] | None = None
    """None: the trial failed."""
    feasible: bool = False


def measurement_outcome(spec: StudySpec, measurement: Measurement) -> Outcome:
    """What ``measurement`` means for its trial under ``spec``'s budgets."""
    attrs: dict[str, Any] = {MEASUREMENT_ATTR: measurement.to_dict(), STATUS_ATTR: measurement.status}
    if measurement.reason:
        attrs[REASON_ATTR] = measurement.reason
    peak = measurement.memory_for(spec.memory_metric)
    if peak is None and measurement.device == "cuda":
        peak = measurement.peak_reserved_bytes
    if measurement.status != "ok" or measurement.latency_s is None or peak is None:
        if measurement.status == "ok":
            attrs[REASON_ATTR] = "the trial returned no latency or memory figure"
        return Outcome(attrs)
    attrs[MEMORY_ATTR] = int(peak)
    over = (peak - spec.vram_budget) / GIB
    outcome = Outcome(attrs, {"vram": over}, [measurement.latency_s, peak / GIB], over <= 0)
    if spec.host_ram_budget is not None and measurement.peak_host_bytes is not None:
        host_over = (measurement.peak_host_bytes - spec.host_ram_budget) / GIB
        outcome.constraints["host_ram"] = host_over
        outcome.feasible = outcome.feasible and host_over <= 0
    if spec.min_psnr is not None and measurement.psnr_db is not None:
        short = spec.min_psnr - min(measurement.psnr_db, PSNR_CAP)
        outcome.constraints["psnr"] = short
        outcome.feasible = outcome.feasible and short <= 0
    return outcome


def tell_measurement(ctx: StudyContext, trial: optuna.Trial, measurement: Measurement) -> bool:
    """Record a measurement on its trial; True when it finished within every budget."""
    from optuna.trial import TrialState

    outcome = measurement_outcome(ctx.spec, measurement)
    for key, value in outcome.attrs.items():
        trial.set_user_attr(key, value)
    if outcome.values is None:
        ctx.study.tell(trial, state=TrialState.FAIL)
        return False
    record_constraints(trial, outcome.constraints)
    ctx.study.tell(trial, values=outcome.values)
    return outcome.feasible


def best_latency(study: optuna.Study) -> float | None:
    """The lowest latency on the study's front so far (None before any finished trial)."""
    try:
        front = study.best_trials
    except ValueError:
        return None
    values = [t.values[0] for t in front if t.values]
    return min(values) if values else None


def run_one_trial(ctx: StudyContext, trial: optuna.Trial, config: TrialConfig, index: int) -> Measurement:
    """Measure an asked trial (its prediction and owner recorded first) and tell Optuna the outcome."""
    spec = ctx.spec
    baseline = trial.user_attrs.get(BASELINE_ATTR)
    trial.set_user_attr(CONFIG_ATTR, config.to_dict())
    trial.set_user_attr(FINGERPRINT_ATTR, fingerprint(ctx.caps))
    for key, value in owner_attrs().items():
        trial.set_user_attr(key, value)
    prediction = memory.predict(ctx.model, config, spec, ctx.caps, ctx.calibration)
    if prediction.device_bytes is not None:
        trial.set_user_attr(PREDICTED_ATTR, int(prediction.device_bytes))
        trial.set_user_attr(PREDICTED_RAW_ATTR, prediction.raw_device_bytes)
        trial.set_user_attr(PREDICTED_HOST_ATTR, prediction.host_bytes)
    ctx.observer.trial_started(trial.number, config, baseline, index)
    request = trial_request(ctx, config, trial.number, baseline)
    with Heartbeat(ctx.study._storage, trial._trial_id):
        try:
            measurement = ctx.execute(request, timeout=spec.trial_timeout, on_phase=ctx.observer.phase)
        except TrialInterrupted as interrupted:
            tell_measurement(ctx, trial, interrupted.measurement)
            requeue(ctx.study, trial._trial_id)
            raise
    measurement = extrapolate(measurement, request.workload.steps, spec.workload.steps)
    feasible = tell_measurement(ctx, trial, measurement)
    ctx.observer.trial_finished(trial.number, measurement, feasible, best_latency(ctx.study))
    if baseline == REFERENCE and measurement.status == "oom":
        enqueue_offload_reference(ctx)
    return measurement


def reference_beyond_the_gpu(ctx: StudyContext, config: TrialConfig) -> tuple[str, float] | None:
    """Why the reference cannot run uncapped here: predicted over the GPU's whole memory (by more than the
    model's own error), where the budget does not apply to it. None where it can run, or nothing is known."""
    total = ctx.caps.total_memory
    if not ctx.caps.cuda or not total:
        return None
    prediction = memory.predict(ctx.model, config, ctx.spec, ctx.caps, ctx.calibration)
    check = memory.budget_check(prediction, total)
    if check is None or not check.over:
        return None
    return (
        f"the reference cannot run here: predicted {format_size(check.predicted)} ({check.margin:.0%} margin) "
        f"is over this GPU's {format_size(total)}"
    ), check.excess_gib


def enqueue_offload_reference(ctx: StudyContext) -> None:
    """The reference ran out of GPU memory: queue it again with model CPU offload, marked so."""
    config = TrialConfig(offload="model")
    if not ctx.caps.cuda or "model" not in ctx.space.knobs().get("offload", ()) or ctx.space.violations(config):
        ctx.observer.message("the reference did not fit this GPU: fidelity (PSNR) will not be measured in this study")
        return
    ctx.study.enqueue_trial(ctx.space.params(config), user_attrs={BASELINE_ATTR: OFFLOAD_REFERENCE})
    ctx.observer.message("the reference did not fit this GPU: it is measured again with model CPU offload (marked so)")


DEADLINE_MARGIN = 1.2
"""A queued trial is started only when the time left is this many times what it is expected to cost."""


def next_outlasts(ctx: StudyContext, left: float) -> str | None:
    """What to do with the next queued trial when it is not expected to finish in the ``left`` seconds of
    the run's time limit (a trial cut off at the limit is GPU time lost): ``"stop"``, it stays queued for
    the next run; ``"defer"``, a retry of a run cut off before (its cost known to be at least that run's
    length, ``cost_floors``) has been put aside for the next run (``_defer_next``) while this one goes on
    with what fits; None, it runs. What the sampler proposes next is not known before it is asked, and runs."""
    from optuna.trial import TrialState

    from qco_tune.search.trial_cost import expected_seconds

    if math.isinf(left):
        return None
    waiting = ctx.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if not waiting:
        return None
    first = min(waiting, key=lambda t: t.number)
    params = first.system_attrs.get("fixed_params") or {}
    try:
        config = TrialConfig.from_params(dict(params))
    except (ValueError, TypeError):
        return None
    floor = cost_floors(ctx.study).get(config.key())
    expected = expected_seconds(config, planner_trials(ctx.study), floor)
    if expected is None or expected * DEADLINE_MARGIN <= left:
        return None
    if floor is not None and first.user_attrs.get(RETRY_OF_ATTR) is not None:
        _defer_next(
            ctx,
            f"deferred: a run of it was cut off after {floor:.0f} s, so it needs about {expected:.0f} s and "
            f"{max(left, 0):.0f} s are left; queued again for the next run",
        )
        return "defer"
    ctx.observer.message(
        f"stopping before the time limit: the next trial ({config.describe()}) is expected to take "
        f"{expected:.0f} s, {max(left, 0):.0f} s are left; it stays queued for the next run"
    )
    return "stop"


def _defer_next(ctx: StudyContext, reason: str) -> None:
    """Ask the queued retry ``next_outlasts`` puts aside and fail it as deferred; queued again at the run's end."""
    trial = ctx.study.ask()
    config = ctx.space.suggest(trial)
    ctx.deferred.append(defer(ctx.study, trial, reason))
    ctx.observer.message(f"#{trial.number} {config.describe()}: {reason}")


def enqueue_untried(ctx: StudyContext, done: dict[str, tuple[int, str]]) -> bool:
    """Enqueue one valid configuration not yet tried; False when the whole space has been tried."""
    for config in ctx.space.iter_configs():
        if config.key() not in done and why_not_run(ctx, config, done) is None:
            ctx.study.enqueue_trial(ctx.space.params(config))
            return True
    return False


def enqueue_plan(ctx: StudyContext, book: Ledger) -> None:
    """Queue what the planner wants measured next, unless something is queued already."""
    from optuna.trial import TrialState

    from qco_tune.search.planner import plan_next

    study = ctx.study
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return
    put_aside = {TrialConfig.from_params(params).key() for params, _ in ctx.deferred}
    plan = plan_next(
        ctx.space,
        planner_trials(study),
        set(book.keys) | put_aside,
        lambda config: why_not_run(ctx, config, book.keys) is None,
        budget_bytes=ctx.spec.vram_budget,
        target=ctx.spec.trials,
        predict=lambda config: memory.predict(ctx.model, config, ctx.spec, ctx.caps, ctx.calibration).device_bytes,
    )
    if plan is not None:
        study.enqueue_trial(ctx.space.params(plan))


def enqueue_held_recipes(ctx: StudyContext, book: Ledger) -> None:
    """Queue the guide's recipes a new study held back (``search.recipe_order``) once they are due: the
    plan has queued nothing, or the trials left are just enough for them."""
    from optuna.trial import TrialState

    if not ctx.spec.seed_baselines:
        return
    study = ctx.study
    seeded = {t.user_attrs.get(BASELINE_ATTR) for t in study.get_trials(deepcopy=False)}
    held = [(name, config) for name, config in ctx.space.baselines() if name not in seeded]
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if held_recipes_due(len(held), waiting, book.counted, ctx.spec.trials):
        for name, config in held:
            study.enqueue_trial(ctx.space.params(config), user_attrs={BASELINE_ATTR: name})
