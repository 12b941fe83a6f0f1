"""The ask/tell loop: Optuna proposes, the space and the memory model filter, the runner measures.

Every trial Optuna hands out ends in one of three states:

* COMPLETE: it ran; values are (latency s, peak memory GiB) and the budget is a constraint, so
  ``study.best_trials`` is the feasible Pareto front;
* FAIL: it ran and did not finish (out of memory, exception, crash, hang, Ctrl-C), with the reason;
* PRUNED: it never ran because a rule of the space forbids it, the memory model predicts it over
  budget by more than its own error (``memory.skip_margin``), or it repeats a configuration already
  measured or failed. Its constraint is set positive so TPE (which ignores FAIL trials) learns to stay
  away from it.

The seeded ``reference`` trial (bf16, no compile, no offload) runs without the budget cap and writes
its output as the study's fidelity reference (``reference_dir``); every later trial reports its PSNR
and latent cosine against it, and ``min_psnr`` in the spec makes PSNR a second constraint. Where the
reference runs out of GPU memory, or is predicted beyond the GPU's whole memory, it is measured again
with model CPU offload, and marked so. The reference is measurement, not a candidate: the budget never
skips it and it never counts as a trial of the target.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from qco_tune.core.compile_artifacts import artifacts_root
from qco_tune.core.keys import BASELINE_ATTR
from qco_tune.core.records import Capabilities
from qco_tune.core.studyspec import StudySpec
from qco_tune.loop.context import (
    FAULTS_ENV,
    MAX_CONSECUTIVE_SKIPS,
    REFERENCE,
    REFERENCE_BASELINES,
    Observer,
    RunResult,
    SilentObserver,
    StudyContext,
    parse_faults,
)
from qco_tune.loop.ledger import complete_queued, fail_interrupted, is_running, ledger, recover, requeue_deferred
from qco_tune.loop.remeasure import remeasure_front, restore_reference
from qco_tune.loop.setup import ensure_materialized, open_study, prepare, quiet_optuna, study_spaces
from qco_tune.loop.signals import stop_signals_as_interrupt
from qco_tune.loop.trial import (
    enqueue_held_recipes,
    enqueue_offload_reference,
    enqueue_plan,
    enqueue_untried,
    next_outlasts,
    recalibrate,
    reference_beyond_the_gpu,
    run_one_trial,
    skip_trial,
    why_not_run,
)
from qco_tune.search.pareto import summarize
from qco_tune.store.storage import open_storage
from qco_tune.store.storage import storage_url as resolve_storage_url

if TYPE_CHECKING:
    import optuna


def run_loop(
    ctx: StudyContext,
    result: RunResult,
    *,
    deadline: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Ask, filter, run and tell until the target, the deadline, an exhausted space or ``should_stop``.

    Ctrl-C (or a signal turned into ``KeyboardInterrupt``) records the running trial as interrupted,
    queues its configuration again and re-raises.
    """
    study, target = ctx.study, ctx.spec.trials
    skips_in_a_row = 0
    current: optuna.Trial | None = None
    try:
        while not should_stop():
            # Another worker may have died since the last trial: its trial goes back to the queue.
            result.recovered += recover(study, ctx.observer)
            complete_queued(study, ctx.space)
            book = ledger(study)
            recalibrate(ctx)
            if target is not None and book.counted >= target:
                result.stopped = "trials"
                return
            if clock() >= deadline:
                result.stopped = "timeout"
                return
            if skips_in_a_row >= MAX_CONSECUTIVE_SKIPS:
                if not enqueue_untried(ctx, book.keys):
                    result.stopped = "exhausted"
                    return
                skips_in_a_row = 0
            if ctx.plan:
                enqueue_plan(ctx, book)
            enqueue_held_recipes(ctx, book)
            verdict = next_outlasts(ctx, deadline - clock())
            if verdict == "stop":
                result.stopped = "timeout"
                return
            if verdict == "defer":
                continue  # put aside: the plan proposes what fits instead
            if ctx.restore_reference:
                ctx.restore_reference = False
                restore_reference(ctx)
            trial = current = study.ask()
            config = ctx.space.suggest(trial)
            baseline = trial.user_attrs.get(BASELINE_ATTR)
            # The reference is measurement, not a candidate: the budget does not apply to it, the GPU does.
            reason = why_not_run(
                ctx, config, ledger(study, exclude=trial.number).keys, check_budget=baseline not in REFERENCE_BASELINES
            )
            too_large = reference_beyond_the_gpu(ctx, config) if reason is None and baseline == REFERENCE else None
            reason = reason or too_large
            if reason is not None:
                skip_trial(ctx, trial, config, *reason)
                if too_large:
                    enqueue_offload_reference(ctx)
                current = None
                result.skipped += 1
                skips_in_a_row += 1
                continue
            skips_in_a_row = 0
            run_one_trial(ctx, trial, config, book.counted + 1)
            current = None
            result.ran += 1
        result.stopped = "stopped"
    except KeyboardInterrupt:
        result.stopped = "interrupted"
        if current is not None and is_running(study, current):
            fail_interrupted(study, current)
        raise
    finally:
        requeue_deferred(study, ctx.deferred)


@stop_signals_as_interrupt()  # SIGINT (even one inherited ignored) and SIGTERM stop it as Ctrl-C does
def run_study(
    spec: StudySpec,
    *,
    storage_url: str | None = None,
    observer: Observer | None = None,
    caps: Capabilities | None = None,
    allow_changed_spec: bool = False,
    prepare_only: bool = False,
    clock: Callable[[], float] = time.monotonic,
    compile_artifacts: str | os.PathLike[str] | None = None,
) -> RunResult:
    """Run (or resume) the study ``spec`` until its trial target or time limit.

    ``prepare_only`` creates (or checks) the study and queues its baselines without running a
    trial: workers (``qco-tune worker``) then do the trials.

    Ctrl-C, SIGINT or SIGTERM (``loop.signals``) ends the running trial's child, records that trial
    as interrupted and re-raises ``KeyboardInterrupt``; everything finished before stays in the storage.

    Compiling trials load and save the study's portable compile artefacts in ``compile_artifacts``
    (default: beside a SQLite storage file, else in qco-tune's cache; ``compile_artifacts.artifacts_root``).
    """
    started = clock()  # the time limit counts from here: probing the machine is part of the run
    observer = observer or SilentObserver()
    quiet_optuna()
    storage = open_storage(storage_url)  # a wrong storage is refused before the machine is probed
    model, caps, space = prepare(spec, caps, observer)
    study, resumed = open_study(spec, storage, model, caps, space, allow_changed_spec=allow_changed_spec)
    result = RunResult(study_name=spec.name)
    space, local = study_spaces(study, spec, model, caps)
    faults = parse_faults(os.environ.get(FAULTS_ENV))
    ctx = StudyContext(spec, model, caps, space, study, observer, faults, local_space=local)
    ctx.compile_artifacts = artifacts_root(resolve_storage_url(storage_url), compile_artifacts)
    ctx.restore_reference = True
    deadline = started + spec.timeout if spec.timeout else math.inf
    # A trial abandoned by a killed run is failed and queued again first, so the header does not count it done.
    result.recovered += recover(study, observer)
    observer.study_started(spec, ledger(study).done, spec.trials, resumed)
    if prepare_only:
        result.stopped = "prepared"
        result.summary = summarize(study.get_trials(deepcopy=False), spec.vram_budget)
        return result
    ensure_materialized(model, caps, observer)
    try:
        run_loop(ctx, result, deadline=deadline, clock=clock)
        if result.stopped in ("trials", "timeout", "exhausted"):
            remeasure_front(ctx, result)
    finally:
        result.summary = summarize(study.get_trials(deepcopy=False), spec.vram_budget)
    return result
