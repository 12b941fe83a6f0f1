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

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qco_tune import memory
from qco_tune.calibration import calibrate
from qco_tune.compile_artifacts import artifacts_root, study_artifacts_dir
from qco_tune.config import (
    Capabilities,
    Measurement,
    ModelInfo,
    StudySpec,
    TrialConfig,
    TrialRequest,
    Workload,
    dict_differences,
    format_size,
    identity_of,
    spec_to_dict,
)
from qco_tune.modelref import resolve_model
from qco_tune.pareto import (
    ATTEMPT_ATTR,
    BASELINE_ATTR,
    CONFIG_ATTR,
    FINGERPRINT_ATTR,
    MEASUREMENT_ATTR,
    MEMORY_ATTR,
    PREDICTED_ATTR,
    PREDICTED_RAW_ATTR,
    REASON_ATTR,
    REMEASURE_OF_ATTR,
    RETRY_OF_ATTR,
    STATUS_ATTR,
    ParetoSummary,
    row_from_trial,
    summarize,
)
from qco_tune.paths import cache_dir, compile_cache_dir
from qco_tune.presets.cache import check_disk, is_materialized
from qco_tune.runner import TrialInterrupted, probe_capabilities, run_trial
from qco_tune.space import SearchSpace
from qco_tune.steps import extrapolate, is_extrapolated
from qco_tune.storage import Heartbeat, open_storage, owner_attrs, recover_stale_trials
from qco_tune.storage import storage_url as resolve_storage_url
from qco_tune.workloads import check_workload

if TYPE_CHECKING:
    import optuna

    from qco_tune.planner import Done

GIB = 2**30
SPEC_ATTR = "qco.spec"
MODEL_ATTR = "qco.model"
CAPABILITIES_ATTR = "qco.capabilities"
GPU_ATTR = "qco.gpu"
VERSION_ATTR = "qco.version"
GPU_KINDS_ATTR = "qco.gpu_kinds"
PREDICTED_HOST_ATTR = "qco.predicted_host_bytes"
METRIC_NAMES = ["latency_s", "peak_memory_gib"]
MAX_CONSECUTIVE_SKIPS = 25
MAX_ATTEMPTS = 3
"""Runs of one configuration that may end interrupted before it is given up: a configuration whose
cold start outlasts every run it is given (a time-limited session, say) must not come back forever."""
"""After this many proposals in a row that cannot run, the next one is drawn from the untried rest."""
FAULTS_ENV = "QCO_TEST_FAULTS"
"""Test-only hook: ``"2:abort,3:hang"`` makes trial 2's child abort and trial 3's hang."""
REFERENCE = "reference"
OFFLOAD_REFERENCE = "reference (model offload)"
"""The reference measured again with model CPU offload, where it does not fit the GPU otherwise."""
REFERENCE_BASELINES = (REFERENCE, OFFLOAD_REFERENCE)
PSNR_CAP = 1000.0
"""dB counted for an output identical to the reference (PSNR is infinite) in the ``psnr`` constraint."""


class StudyError(RuntimeError):
    """A study cannot start or continue; the message is one line for the user."""


class Observer(Protocol):
    """Receives progress events of a running study (the CLI's live display, tests)."""

    def study_started(self, spec: StudySpec, done: int, target: int | None, resumed: bool) -> None: ...
    def trial_started(self, number: int, config: TrialConfig, baseline: str | None, index: int) -> None: ...
    def phase(self, text: str) -> None: ...
    def trial_finished(self, number: int, measurement: Measurement, feasible: bool, best: float | None) -> None: ...
    def trial_skipped(self, number: int, config: TrialConfig, reason: str) -> None: ...
    def message(self, text: str) -> None: ...


class SilentObserver:
    """An observer that ignores every event."""

    def study_started(self, spec: StudySpec, done: int, target: int | None, resumed: bool) -> None:
        pass

    def trial_started(self, number: int, config: TrialConfig, baseline: str | None, index: int) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def trial_finished(self, number: int, measurement: Measurement, feasible: bool, best: float | None) -> None:
        pass

    def trial_skipped(self, number: int, config: TrialConfig, reason: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class RunResult:
    """What one ``run_study`` call did."""

    study_name: str
    ran: int = 0
    skipped: int = 0
    stopped: str = ""
    """Why the loop ended: ``trials``, ``timeout``, ``exhausted`` or ``interrupted``."""
    recovered: list[int] = field(default_factory=list)
    remeasured: list[tuple[int, int]] = field(default_factory=list)
    """(extrapolated trial, its re-measurement at the full step count) pairs of this run."""
    summary: ParetoSummary | None = None


@dataclass
class _Context:
    spec: StudySpec
    model: ModelInfo
    caps: Capabilities
    space: SearchSpace
    study: optuna.Study
    observer: Observer
    faults: dict[int, str]
    local_space: SearchSpace | None = None
    """What this machine can run, when the study's space was built on another (a worker's GPU)."""
    calibration: memory.Calibration = field(default_factory=memory.Calibration)
    """The memory model's corrections, fitted on the study's finished trials (``recalibrate``)."""
    execute: Callable[..., Measurement] = run_trial
    """Runs one trial request: the real runner, or a replay of recorded measurements (``qco-tune bench``)."""
    plan: bool = True
    """Stage the search (``qco_tune.planner``): the memory levels uncompiled, then compile what can reach the
    front, then refine it along the other knobs. False: the sampler alone proposes (kept for the benchmark's
    comparison)."""
    compile_artifacts: Path | None = None
    """The folder of the storage's portable compile artefacts (``compile_artifacts.artifacts_root``); None:
    trials neither load nor save them (the benchmark's replays)."""
    restore_reference: bool = False
    """Before the first trial, measure the reference again when its output is not on this machine
    (``restore_reference``): ``run`` and workers do; replays and in-process tests do not."""


def parse_faults(text: str | None) -> dict[int, str]:
    """``"2:abort,3:hang"`` → ``{2: "abort", 3: "hang"}`` (test-only fault injection)."""
    faults: dict[int, str] = {}
    for item in (text or "").split(","):
        if item.strip():
            number, _, kind = item.partition(":")
            faults[int(number)] = kind.strip()
    return faults


def prepare(spec: StudySpec, caps: Capabilities | None = None) -> tuple[ModelInfo, Capabilities, SearchSpace]:
    """Resolve the model, probe the machine, build the space and check that something can fit.

    Raises ``StudyError`` (or the model, workload, disk and spec errors) before any GPU time is spent.
    """
    model = resolve_model(spec.model, spec.weights)
    check_workload(spec.workload, model)
    if model.source == "preset":
        check_disk(model.reference, cache_dir())
    caps = caps or probe_capabilities()
    space = SearchSpace.build(spec, model, caps)
    if space.is_empty():
        raise StudyError("the search space is empty here: " + "; ".join(f"{k}: {why}" for k, why in space.missing()))
    need = memory.smallest_need(space, model, spec, caps)
    # Cautious: refusing the whole study takes more than the per-trial margin (memory.NOTHING_FITS_MARGIN).
    if need is not None and memory.over_budget_bytes(need, spec.vram_budget, 1 + memory.NOTHING_FITS_MARGIN):
        raise StudyError(
            f"nothing in the space fits a {format_size(spec.vram_budget)} budget: the smallest predicted need is "
            f"{format_size(need)} (uncalibrated, margin {memory.NOTHING_FITS_MARGIN:.0%})"
        )
    return model, caps, space


def gpu_kind(caps: Capabilities) -> str:
    """The GPU kind trials are tied to: the device name (``cpu`` without CUDA)."""
    return caps.gpu_name or "cpu"


def check_gpu_kind(study: optuna.Study, caps: Capabilities) -> None:
    """Refuse to add trials from another GPU kind to a study tied to one, unless its spec allows mixing."""
    spec = study.user_attrs.get(SPEC_ATTR) or {}
    tied = study.user_attrs.get(GPU_ATTR)
    if tied and tied != gpu_kind(caps) and not spec.get("mix_gpus", False):
        raise StudyError(
            f"study {study.study_name!r} is tied to {tied}; this machine has {gpu_kind(caps)} "
            "(set mix_gpus = true in the spec to allow it, or compare two studies instead)"
        )


def record_gpu_kind(study: optuna.Study, caps: Capabilities) -> None:
    """Add this machine's GPU kind to the kinds the study has seen."""
    kinds = list(study.user_attrs.get(GPU_KINDS_ATTR) or [])
    if gpu_kind(caps) not in kinds:
        study.set_user_attr(GPU_KINDS_ATTR, [*kinds, gpu_kind(caps)])


def open_study(
    spec: StudySpec,
    storage: Any,
    model: ModelInfo,
    caps: Capabilities,
    space: SearchSpace,
    *,
    allow_changed_spec: bool = False,
    seed: int | None = None,
) -> tuple[optuna.Study, bool]:
    """Load the study named by ``spec`` or create it (seeding the guide's recipes). Returns (study, resumed).

    ``seed`` seeds the sampler (the replay benchmark); ``qco-tune run`` leaves it None.
    """
    import optuna

    from qco_tune import __version__

    sampler = make_sampler(seed)
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler)
    except KeyError:
        study = None
    if study is not None:
        stored = study.user_attrs.get(SPEC_ATTR)
        if isinstance(stored, dict) and not allow_changed_spec:
            diffs = dict_differences(identity_of(stored), spec.identity())
            if diffs:
                raise StudyError(
                    f"study {spec.name!r} exists with a different spec ({'; '.join(diffs[:3])}); "
                    "pass --study NEW_NAME for a new study or --allow-changed-spec to continue this one"
                )
        check_gpu_kind(study, caps)
        study.set_user_attr(SPEC_ATTR, spec_to_dict(spec))
        record_gpu_kind(study, caps)
        return study, True
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=sampler,
        directions=["minimize", "minimize"],
    )
    study.set_metric_names(METRIC_NAMES)
    study.set_user_attr(SPEC_ATTR, spec_to_dict(spec))
    study.set_user_attr(MODEL_ATTR, model.to_dict())
    study.set_user_attr(CAPABILITIES_ATTR, caps.to_dict())
    study.set_user_attr(GPU_ATTR, gpu_kind(caps))
    record_gpu_kind(study, caps)
    study.set_user_attr(VERSION_ATTR, __version__)
    if spec.seed_baselines:
        for name, config in space.baselines():
            study.enqueue_trial(space.params(config), user_attrs={BASELINE_ATTR: name})
    return study, False


def quiet_optuna() -> None:
    """Keep Optuna's info logs and experimental-feature warnings out of qco-tune's own output."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Heartbeats are recorded by qco-tune itself around each trial (ask-and-tell, not optimize).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def make_sampler(seed: int | None = None) -> optuna.samplers.BaseSampler:
    """qco-tune's sampler, for ``qco-tune run``, workers and the replay benchmark alike.

    TPE over the conditional space: multivariate with groups, so knobs that exist together are
    modelled together. What it proposes is staged by ``qco_tune.planner`` (``run_loop``) and filtered
    by the rules, the ledger and the memory model (``_why_not_run``) before any GPU time is spent.
    """
    import optuna

    return optuna.samplers.TPESampler(multivariate=True, group=True, n_startup_trials=8, seed=seed)


@dataclass
class Ledger:
    """What a study has spent: configurations measured, failed or running now, and the trial count."""

    keys: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Configuration key → (trial number, ``measured`` | ``failed`` | ``running``)."""
    counted: int = 0
    """Trials that count towards the target: finished, failed, and running elsewhere. Skipped
    proposals, interrupted trials (which are handed back to the queue) and the reference do not count."""


def ledger(study: optuna.Study, exclude: int | None = None) -> Ledger:
    """The study's ``Ledger``, leaving out trial number ``exclude`` (the caller's own, just asked)."""
    from optuna.trial import TrialState

    book = Ledger()
    label = {TrialState.COMPLETE: "measured", TrialState.FAIL: "failed", TrialState.RUNNING: "running"}
    for trial in study.get_trials(deepcopy=False, states=tuple(label)):
        if trial.number == exclude or (trial.user_attrs.get(STATUS_ATTR) == "interrupted" and not _given_up(trial)):
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


def _skip(ctx: _Context, trial: optuna.Trial, config: TrialConfig, reason: str, over_gib: float = 1.0) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr(CONFIG_ATTR, config.to_dict())
    trial.set_user_attr(REASON_ATTR, reason)
    trial.set_user_attr(STATUS_ATTR, "skipped")
    trial.set_constraint("vram", max(over_gib, 1e-3))
    ctx.study.tell(trial, state=TrialState.PRUNED)
    ctx.observer.trial_skipped(trial.number, config, reason)


def _why_not_run(
    ctx: _Context, config: TrialConfig, done: dict[str, tuple[int, str]], *, check_budget: bool = True
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


def _over_budget(ctx: _Context, config: TrialConfig) -> tuple[str, float] | None:
    """The skip reason when ``config`` is predicted over the budget by more than the model's own error
    on this study (``memory.skip_margin``: its calibration's residuals, or the uncalibrated margin)."""
    prediction = memory.predict(ctx.model, config, ctx.spec, ctx.caps, ctx.calibration)
    check = memory.budget_check(prediction, ctx.spec.vram_budget)
    if check is None or not check.over:
        return None
    return check.reason(), check.excess_gib


def recalibrate(ctx: _Context) -> None:
    """Fit the memory model's corrections on the study's finished trials (cheap: a few small sums)."""
    from optuna.trial import TrialState

    trials = ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ctx.calibration = calibrate(map(row_from_trial, trials), ctx.model, ctx.spec, ctx.caps)


def _enqueue_untried(ctx: _Context, done: dict[str, tuple[int, str]]) -> bool:
    """Enqueue one valid configuration not yet tried; False when the whole space has been tried."""
    for config in ctx.space.iter_configs():
        if config.key() not in done and _why_not_run(ctx, config, done) is None:
            ctx.study.enqueue_trial(ctx.space.params(config))
            return True
    return False


def _enqueue_plan(ctx: _Context, book: Ledger) -> None:
    """Queue what the planner wants measured next, unless something is queued already."""
    from optuna.trial import TrialState

    from qco_tune.planner import plan_next

    study = ctx.study
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return
    plan = plan_next(
        ctx.space,
        planner_trials(study),
        set(book.keys),
        lambda config: _why_not_run(ctx, config, book.keys) is None,
        budget_bytes=ctx.spec.vram_budget,
        target=ctx.spec.trials,
        predict=lambda config: memory.predict(ctx.model, config, ctx.spec, ctx.caps, ctx.calibration).device_bytes,
    )
    if plan is not None:
        study.enqueue_trial(ctx.space.params(plan))


def planner_trials(study: optuna.Study) -> list[Done]:
    """The study's finished trials as the planner sees them (interrupted ones left out)."""
    from optuna.trial import TrialState

    from qco_tune.planner import Done

    done = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        data = trial.user_attrs.get(CONFIG_ATTR)
        if not isinstance(data, dict) or trial.user_attrs.get(STATUS_ATTR) == "interrupted":
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


def reference_dir(spec: StudySpec, workload: Workload | None = None) -> Path:
    """``<cache>/references/<study>-<hash>/``: the study's reference output, keyed by what shapes the output
    (``workload``: the one trials run, when they measure fewer steps than the spec's)."""
    workload = workload or spec.workload
    shaping = {"model": spec.model, "weights": spec.weights, "dtype": spec.dtype, "workload": workload.__dict__}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name).strip("-") or "study"
    return cache_dir() / "references" / f"{slug}-{digest}"


def study_compile_cache(study: str, caps: Capabilities) -> Path:
    """The compilation cache shared by ``study``'s trials on this GPU kind with this torch version."""
    return compile_cache_dir(study, gpu_kind(caps), dict(caps.versions).get("torch"))


def study_compile_artifacts(ctx: _Context) -> str | None:
    """The study's artefact folder that its trials load from and save to; None without one, or when the
    spec asks for cold compiles (``compile_cache = false``: artefacts would make them warm)."""
    if ctx.compile_artifacts is None or not ctx.spec.compile_cache:
        return None
    return str(study_artifacts_dir(ctx.compile_artifacts, ctx.spec.name))


def measured_steps(spec: StudySpec) -> int | None:
    """The steps searched trials run when fewer than the workload's (``run.measure_steps``), else None."""
    steps = spec.measure_steps
    return steps if steps is not None and steps < spec.workload.steps else None


def trial_workload(spec: StudySpec, full: bool = False) -> Workload:
    """The workload a trial runs: the spec's, with ``measure_steps`` steps unless ``full``."""
    steps = None if full else measured_steps(spec)
    return spec.workload if steps is None else dataclasses.replace(spec.workload, steps=steps)


def _request(
    ctx: _Context, config: TrialConfig, number: int, baseline: str | None = None, full: bool = False
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
class _Outcome:
    """What a measurement means for its trial: attributes, constraints, objective values, feasibility."""

    attrs: dict[str, Any]
    constraints: dict[str, float] = field(default_factory=dict)
    values: list[float] | None = None
    """None: the trial failed."""
    feasible: bool = False


def _outcome(spec: StudySpec, measurement: Measurement) -> _Outcome:
    attrs: dict[str, Any] = {MEASUREMENT_ATTR: measurement.to_dict(), STATUS_ATTR: measurement.status}
    if measurement.reason:
        attrs[REASON_ATTR] = measurement.reason
    peak = measurement.memory_for(spec.memory_metric)
    if peak is None and measurement.device == "cuda":
        peak = measurement.peak_reserved_bytes
    if measurement.status != "ok" or measurement.latency_s is None or peak is None:
        if measurement.status == "ok":
            attrs[REASON_ATTR] = "the trial returned no latency or memory figure"
        return _Outcome(attrs)
    attrs[MEMORY_ATTR] = int(peak)
    over = (peak - spec.vram_budget) / GIB
    outcome = _Outcome(attrs, {"vram": over}, [measurement.latency_s, peak / GIB], over <= 0)
    if spec.host_ram_budget is not None and measurement.peak_host_bytes is not None:
        host_over = (measurement.peak_host_bytes - spec.host_ram_budget) / GIB
        outcome.constraints["host_ram"] = host_over
        outcome.feasible = outcome.feasible and host_over <= 0
    if spec.min_psnr is not None and measurement.psnr_db is not None:
        short = spec.min_psnr - min(measurement.psnr_db, PSNR_CAP)
        outcome.constraints["psnr"] = short
        outcome.feasible = outcome.feasible and short <= 0
    return outcome


def _tell(ctx: _Context, trial: optuna.Trial, measurement: Measurement) -> bool:
    """Record a measurement on its trial; True when it finished within every budget."""
    from optuna.trial import TrialState

    outcome = _outcome(ctx.spec, measurement)
    for key, value in outcome.attrs.items():
        trial.set_user_attr(key, value)
    if outcome.values is None:
        ctx.study.tell(trial, state=TrialState.FAIL)
        return False
    for key, value in outcome.constraints.items():
        trial.set_constraint(key, value)
    ctx.study.tell(trial, values=outcome.values)
    return outcome.feasible


def _best_latency(study: optuna.Study) -> float | None:
    try:
        front = study.best_trials
    except ValueError:
        return None
    values = [t.values[0] for t in front if t.values]
    return min(values) if values else None


def fingerprint(caps: Capabilities) -> dict[str, Any]:
    """Where a trial ran: host, GPU and the versions that shape its figures."""
    return {
        "host": caps.host,
        "gpu": caps.gpu_name or "cpu",
        "gpu_memory": caps.total_memory,
        "compute_capability": list(caps.compute_capability) if caps.compute_capability else None,
        "versions": dict(caps.versions),
    }


def _run_one(ctx: _Context, trial: optuna.Trial, config: TrialConfig, index: int) -> Measurement:
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
    request = _request(ctx, config, trial.number, baseline)
    with Heartbeat(ctx.study._storage, trial._trial_id):
        try:
            measurement = ctx.execute(request, timeout=spec.trial_timeout, on_phase=ctx.observer.phase)
        except TrialInterrupted as interrupted:
            _tell(ctx, trial, interrupted.measurement)
            requeue(ctx.study, trial._trial_id)
            raise
    measurement = extrapolate(measurement, request.workload.steps, spec.workload.steps)
    feasible = _tell(ctx, trial, measurement)
    ctx.observer.trial_finished(trial.number, measurement, feasible, _best_latency(ctx.study))
    if baseline == REFERENCE and measurement.status == "oom":
        _enqueue_offload_reference(ctx)
    return measurement


def restore_reference(ctx: _Context) -> float | None:
    """Measure the study's reference again, as measurement and not as a trial, when it has finished in the
    storage but its output is not on this machine (a resumed study on a fresh GPU machine, a worker on
    another host): trials compare their first call with that output, so without it none would get PSNR.
    The seconds it took (None when nothing was needed, or it failed), also said as a message."""
    from optuna.trial import TrialState

    from qco_tune.backends.fidelity import load_meta

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
    request = _request(ctx, config, trial.number, trial.user_attrs[BASELINE_ATTR])
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


def _reference_beyond_the_gpu(ctx: _Context, config: TrialConfig) -> tuple[str, float] | None:
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


def _enqueue_offload_reference(ctx: _Context) -> None:
    """The reference ran out of GPU memory: queue it again with model CPU offload, marked so."""
    config = TrialConfig(offload="model")
    if not ctx.caps.cuda or "model" not in ctx.space.knobs().get("offload", ()) or ctx.space.violations(config):
        ctx.observer.message("the reference did not fit this GPU: fidelity (PSNR) will not be measured in this study")
        return
    ctx.study.enqueue_trial(ctx.space.params(config), user_attrs={BASELINE_ATTR: OFFLOAD_REFERENCE})
    ctx.observer.message("the reference did not fit this GPU: it is measured again with model CPU offload (marked so)")


DEADLINE_MARGIN = 1.2
"""A queued trial is started only when the time left is this many times what it is expected to cost."""


def _next_outlasts(ctx: _Context, left: float) -> bool:
    """True when the next queued trial is not expected to finish in the ``left`` seconds of the run's time
    limit: it stays queued for the next run, rather than be cut off at the limit (GPU time lost). What the
    sampler proposes next is not known before it is asked, and runs."""
    from optuna.trial import TrialState

    from qco_tune.trial_cost import expected_seconds

    if math.isinf(left):
        return False
    waiting = ctx.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if not waiting:
        return False
    params = min(waiting, key=lambda t: t.number).system_attrs.get("fixed_params") or {}
    try:
        config = TrialConfig.from_params(dict(params))
    except (ValueError, TypeError):
        return False
    expected = expected_seconds(config, planner_trials(ctx.study))
    if expected is None or expected * DEADLINE_MARGIN <= left:
        return False
    ctx.observer.message(
        f"stopping before the time limit: the next trial ({config.describe()}) is expected to take "
        f"{expected:.0f} s, {max(left, 0):.0f} s are left; it stays queued for the next run"
    )
    return True


def _is_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    from optuna.trial import TrialState

    return bool(study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING)


def _fail_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Ctrl-C between ask and tell: the asked trial must not stay RUNNING, and goes back to the queue."""
    from optuna.trial import TrialState

    try:
        trial.set_user_attr(REASON_ATTR, "interrupted by Ctrl-C")
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


def study_spaces(
    study: optuna.Study, spec: StudySpec, model: ModelInfo, caps: Capabilities
) -> tuple[SearchSpace, SearchSpace | None]:
    """(the study's space, this machine's space or None when they are the same machine's).

    Optuna needs the same choices for a parameter in every trial of a study, so the space is the one
    built on the machine that created the study; what this machine cannot run of it is skipped here.
    """
    creator = study.user_attrs.get(CAPABILITIES_ATTR)
    local = SearchSpace.build(spec, model, caps)
    if not isinstance(creator, dict) or Capabilities.from_dict(creator) == caps:
        return local, None
    return SearchSpace.build(spec, model, Capabilities.from_dict(creator)), local


def run_loop(
    ctx: _Context,
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
            book = ledger(study)
            recalibrate(ctx)
            if target is not None and book.counted >= target:
                result.stopped = "trials"
                return
            if clock() >= deadline:
                result.stopped = "timeout"
                return
            if skips_in_a_row >= MAX_CONSECUTIVE_SKIPS:
                if not _enqueue_untried(ctx, book.keys):
                    result.stopped = "exhausted"
                    return
                skips_in_a_row = 0
            if ctx.plan:
                _enqueue_plan(ctx, book)
            if _next_outlasts(ctx, deadline - clock()):
                result.stopped = "timeout"
                return
            if ctx.restore_reference:
                ctx.restore_reference = False
                restore_reference(ctx)
            trial = current = study.ask()
            config = ctx.space.suggest(trial)
            baseline = trial.user_attrs.get(BASELINE_ATTR)
            # The reference is measurement, not a candidate: the budget does not apply to it, the GPU does.
            reason = _why_not_run(
                ctx, config, ledger(study, exclude=trial.number).keys, check_budget=baseline not in REFERENCE_BASELINES
            )
            too_large = _reference_beyond_the_gpu(ctx, config) if reason is None and baseline == REFERENCE else None
            reason = reason or too_large
            if reason is not None:
                _skip(ctx, trial, config, *reason)
                if too_large:
                    _enqueue_offload_reference(ctx)
                current = None
                result.skipped += 1
                skips_in_a_row += 1
                continue
            skips_in_a_row = 0
            _run_one(ctx, trial, config, book.counted + 1)
            current = None
            result.ran += 1
        result.stopped = "stopped"
    except KeyboardInterrupt:
        result.stopped = "interrupted"
        if current is not None and _is_running(study, current):
            _fail_interrupted(study, current)
        raise


REMEASURE_ROUNDS = 10
"""Bound on rounds of re-measuring: each can bring trials of the front that were dominated before."""


def remeasure_front(ctx: _Context, result: RunResult) -> None:
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


def _remeasure(ctx: _Context, number: int) -> int:
    """Run trial ``number``'s configuration at the full step count; record it as a new trial. Its number."""
    import optuna
    from optuna.trial import TrialState

    storage = ctx.study._storage
    original = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(ctx.study._study_id, number))
    config = TrialConfig.from_dict(original.user_attrs[CONFIG_ATTR])
    baseline = original.user_attrs.get(BASELINE_ATTR)
    request = _request(ctx, config, number, baseline, full=True)
    recalibrate(ctx)
    prediction = memory.predict(ctx.model, config, ctx.spec, ctx.caps, ctx.calibration)
    ctx.observer.phase(f"re-measure #{number}")
    measurement = run_trial(request, timeout=ctx.spec.trial_timeout, on_phase=ctx.observer.phase)
    outcome = _outcome(ctx.spec, measurement)
    attrs: dict[str, Any] = {
        CONFIG_ATTR: config.to_dict(),
        FINGERPRINT_ATTR: fingerprint(ctx.caps),
        REMEASURE_OF_ATTR: number,
        **outcome.attrs,
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
        constraints=outcome.constraints if outcome.values is not None else None,
    )
    ctx.study.add_trial(frozen)
    added = max(t.number for t in ctx.study.get_trials(deepcopy=False) if t.user_attrs.get(REMEASURE_OF_ATTR) == number)
    ctx.observer.trial_finished(added, measurement, outcome.feasible, _best_latency(ctx.study))
    return added


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

    Ctrl-C ends the running trial's child, records that trial as interrupted and re-raises
    ``KeyboardInterrupt``; everything finished before stays in the storage.

    Compiling trials load and save the study's portable compile artefacts in ``compile_artifacts``
    (default: beside a SQLite storage file, else in qco-tune's cache; ``compile_artifacts.artifacts_root``).
    """
    observer = observer or SilentObserver()
    quiet_optuna()
    model, caps, space = prepare(spec, caps)
    storage = open_storage(storage_url)
    study, resumed = open_study(spec, storage, model, caps, space, allow_changed_spec=allow_changed_spec)
    result = RunResult(study_name=spec.name)
    space, local = study_spaces(study, spec, model, caps)
    faults = parse_faults(os.environ.get(FAULTS_ENV))
    ctx = _Context(spec, model, caps, space, study, observer, faults, local_space=local)
    ctx.compile_artifacts = artifacts_root(resolve_storage_url(storage_url), compile_artifacts)
    ctx.restore_reference = True
    deadline = clock() + spec.timeout if spec.timeout else math.inf
    observer.study_started(spec, ledger(study).counted, spec.trials, resumed)
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


def ensure_materialized(model: ModelInfo, caps: Capabilities, observer: Observer) -> None:
    """Build a preset's local folder before the first trial (once per machine), showing its progress."""
    if model.source != "preset" or is_materialized(model.reference, cache_dir()):
        return
    from qco_tune.materializing import materialize_in_child
    from qco_tune.presets import get_preset

    preset = get_preset(model.reference)
    where = "the GPU" if caps.cuda else "the CPU (minutes for a full-size model: a GPU builds it in seconds)"
    observer.message(
        f"materialising preset {preset.name} ({format_size(preset.saved_bytes())}) once, on {where}, "
        f"into {cache_dir() / 'presets'}"
    )
    result = materialize_in_child(
        model.reference, cache_dir(), device="cuda" if caps.cuda else "cpu", on_phase=observer.phase
    )
    took = f" in {result.seconds:.1f} s" if result.seconds is not None else ""
    observer.message(f"materialised {model.reference}{took}: {result.path}")


def load_summary(study: optuna.Study) -> ParetoSummary:
    """The Pareto summary of a stored study, with its budget from the stored spec."""
    spec = study.user_attrs.get(SPEC_ATTR) or {}
    return summarize(study.get_trials(deepcopy=False), spec.get("vram_budget"))
