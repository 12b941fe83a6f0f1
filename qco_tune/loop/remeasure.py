"""Re-measuring the front: extrapolated trials measured again at the study's full step count."""

from __future__ import annotations

import time
from typing import Any

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    FINGERPRINT_ATTR,
    PREDICTED_ATTR,
    PREDICTED_HOST_ATTR,
    PREDICTED_RAW_ATTR,
    REMEASURE_OF_ATTR,
)
from qco_tune.loop.context import REFERENCE_BASELINES, RunResult, StudyContext
from qco_tune.loop.setup import fingerprint, measured_steps, reference_dir, trial_workload
from qco_tune.loop.trial import best_latency, measurement_outcome, recalibrate, trial_request
from qco_tune.measure.runner import TrialInterrupted, run_trial
from qco_tune.search import memory
from qco_tune.search.pareto import summarize
from qco_tune.search.steps import is_extrapolated
from qco_tune.store.constraints import constraint_system_attrs, constraint_user_attrs

REMEASURE_ROUNDS = 10
"""Bound on rounds of re-measuring: each can bring trials of the front that were dominated before."""


def remeasure_front(ctx: StudyContext, result: RunResult) -> None:
    """Measure the extrapolated trials of the final Pareto front (and the feasible seeded recipes, which
    the summary compares it with) again at the full step count; those measurements are authoritative.

    Each becomes a new finished trial with ``qco.remeasure_of`` set; the extrapolated one is then
    ``superseded`` in the summary. The study's reference is measured again first when it was
    extrapolated, so that fidelity compares outputs of the same step count. Repeats until the front
    holds no extrapolated trial (a re-measured trial may leave it and let another in).
    Ctrl-C stops the running re-measurement without recording it; the next run does it again.
    """
    if measured_steps(ctx.spec) is None:
        return
    for _ in range(REMEASURE_ROUNDS):
        summary = summarize(ctx.study.get_trials(deepcopy=False), ctx.spec.vram_budget)
        done = {r.remeasure_of for r in summary.rows if r.remeasure_of is not None}
        wanted = [*summary.front, *(r for r in summary.baselines.values() if r.feasible)]
        todo = {r.number: r for r in wanted if is_extrapolated(r.measurement) and r.number not in done}
        if not todo:
            return
        reference = next(
            (
                r
                for r in summary.baselines.values()
                if r.baseline in REFERENCE_BASELINES
                and r.category in ("front", "dominated", "infeasible")  # it ran to the end (not the OOM one)
                and is_extrapolated(r.measurement)
                and r.number not in done
            ),
            None,
        )
        if reference is not None:
            todo = {reference.number: reference, **todo}
        ctx.observer.message(
            f"re-measuring {len(todo)} trial(s) of the front at the full {ctx.spec.workload.steps} steps: "
            + ", ".join(f"#{n}" for n in todo)
        )
        for number in todo:
            result.remeasured.append((number, _remeasure(ctx, number)))


def _remeasure(ctx: StudyContext, number: int) -> int:
    """Run trial ``number``'s configuration at the full step count; record it as a new trial. Its number."""
    import optuna
    from optuna.trial import TrialState

    storage = ctx.study._storage
    original = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(ctx.study._study_id, number))
    config = TrialConfig.from_dict(original.user_attrs[CONFIG_ATTR])
    baseline = original.user_attrs.get(BASELINE_ATTR)
    request = trial_request(ctx, config, number, baseline, full=True)
    recalibrate(ctx)
    prediction = memory.predict(ctx.model, config, ctx.spec, ctx.caps, ctx.calibration)
    ctx.observer.phase(f"re-measure #{number}")
    measurement = run_trial(request, timeout=ctx.spec.trial_timeout, on_phase=ctx.observer.phase)
    outcome = measurement_outcome(ctx.spec, measurement)
    attrs: dict[str, Any] = {
        CONFIG_ATTR: config.to_dict(),
        FINGERPRINT_ATTR: fingerprint(ctx.caps),
        REMEASURE_OF_ATTR: number,
        **outcome.attrs,
        **(constraint_user_attrs(outcome.constraints) if outcome.values is not None else {}),
    }
    if BASELINE_ATTR in original.user_attrs:
        attrs[BASELINE_ATTR] = original.user_attrs[BASELINE_ATTR]
    if prediction.device_bytes is not None:
        attrs.update(
            {
                PREDICTED_ATTR: prediction.device_bytes,
                PREDICTED_RAW_ATTR: prediction.raw_device_bytes,
                PREDICTED_HOST_ATTR: prediction.host_bytes,
            }
        )
    frozen = optuna.trial.create_trial(
        state=TrialState.COMPLETE if outcome.values is not None else TrialState.FAIL,
        values=outcome.values,
        params=dict(original.params),
        distributions=dict(original.distributions),
        user_attrs=attrs,
        system_attrs=constraint_system_attrs(outcome.constraints) if outcome.values is not None else None,
    )
    ctx.study.add_trial(frozen)
    added = max(t.number for t in ctx.study.get_trials(deepcopy=False) if t.user_attrs.get(REMEASURE_OF_ATTR) == number)
    ctx.observer.trial_finished(added, measurement, outcome.feasible, best_latency(ctx.study))
    return added


def restore_reference(ctx: StudyContext) -> float | None:
    """Measure the study's reference again, as measurement and not as a trial, when it has finished in the
    storage but its output is not on this machine (a resumed study on a fresh GPU machine, a worker on
    another host): trials compare their first call with that output, so without it none would get PSNR.
    The seconds it took (None when nothing was needed, or it failed), also said as a message."""
    from optuna.trial import TrialState

    from qco_tune.measure.reference import load_meta

    finished = [
        t
        for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(BASELINE_ATTR) in REFERENCE_BASELINES and CONFIG_ATTR in t.user_attrs
    ]
    if not finished or load_meta(reference_dir(ctx.spec, trial_workload(ctx.spec))) is not None:
        return None
    trial = finished[-1]  # the offload reference, where the plain one did not fit
    config = TrialConfig.from_dict(trial.user_attrs[CONFIG_ATTR])
    ctx.observer.message(
        f"the reference output (trial #{trial.number}) is not on this machine: measuring it again first, "
        "so that every trial here gets its fidelity (not a trial of the study)"
    )
    request = trial_request(ctx, config, trial.number, trial.user_attrs[BASELINE_ATTR])
    start = time.monotonic()
    ctx.observer.phase(f"reference #{trial.number} again")
    try:
        measurement = ctx.execute(request, timeout=ctx.spec.trial_timeout, on_phase=ctx.observer.phase)
    except TrialInterrupted:
        raise KeyboardInterrupt from None
    seconds = time.monotonic() - start
    if measurement.status != "ok":
        ctx.observer.message(
            f"the reference could not be measured again ({measurement.status}: {measurement.reason}): "
            "trials here get no fidelity"
        )
        return None
    ctx.observer.message(f"reference output restored in {seconds:.0f} s")
    return seconds
