"""Opening a study: the model, the machine and the space it is searched in, its storage, sampler and files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import (
    BASELINE_ATTR,
    CAPABILITIES_ATTR,
    GPU_ATTR,
    GPU_KINDS_ATTR,
    MODEL_ATTR,
    SPEC_ATTR,
    VERSION_ATTR,
)
from qco_tune.core.modelref import resolve_model
from qco_tune.core.paths import cache_dir, compile_cache_dir
from qco_tune.core.presets.cache import check_disk, is_materialized
from qco_tune.core.records import Capabilities, ModelInfo
from qco_tune.core.studyspec import StudySpec, Workload, dict_differences, identity_of, spec_to_dict
from qco_tune.core.units import format_size
from qco_tune.core.workloads import check_workload
from qco_tune.loop.context import METRIC_NAMES, Observer, StudyError
from qco_tune.measure.runner import inspect_model, probe_capabilities
from qco_tune.search import memory
from qco_tune.search.pareto import ParetoSummary, summarize
from qco_tune.search.recipe_order import recipes_to_hold
from qco_tune.search.space import SearchSpace

if TYPE_CHECKING:
    import optuna


def prepare(
    spec: StudySpec, caps: Capabilities | None = None, observer: Observer | None = None
) -> tuple[ModelInfo, Capabilities, SearchSpace]:
    """Resolve the model, probe the machine, build the space and check that something can fit.

    ``observer`` hears where the time went when probing the machine was slow. Raises ``StudyError`` (or the
    model, workload, disk and spec errors) before any GPU time is spent.
    """
    model = resolve_model(spec.model, spec.weights, spec.revision)
    check_workload(spec.workload, model)
    if model.source == "preset":
        check_disk(model.reference, cache_dir())
    caps = caps or probe_capabilities(on_slow=observer.message if observer else None)
    model = inspect_model(model)
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
        recipes = space.baselines()

        def fits(config: TrialConfig) -> bool:
            need = memory.predict(model, config, spec, caps).device_bytes
            return need is not None and need <= spec.vram_budget

        held = {name for name, _ in recipes_to_hold(recipes, fits)}  # queued later: ``enqueue_held_recipes``
        for name, config in recipes:
            if name not in held:
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
    modelled together. What it proposes is staged by ``qco_tune.search.planner`` (``run_loop``) and filtered
    by the rules, the ledger and the memory model (``why_not_run``) before any GPU time is spent.
    """
    import optuna

    return optuna.samplers.TPESampler(multivariate=True, group=True, n_startup_trials=8, seed=seed)


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


def measured_steps(spec: StudySpec) -> int | None:
    """The steps searched trials run when fewer than the workload's (``run.measure_steps``), else None."""
    steps = spec.measure_steps
    return steps if steps is not None and steps < spec.workload.steps else None


def trial_workload(spec: StudySpec, full: bool = False) -> Workload:
    """The workload a trial runs: the spec's, with ``measure_steps`` steps unless ``full``."""
    steps = None if full else measured_steps(spec)
    return spec.workload if steps is None else dataclasses.replace(spec.workload, steps=steps)


def fingerprint(caps: Capabilities) -> dict[str, Any]:
    """Where a trial ran: host, GPU and the versions that shape its figures."""
    return {
        "host": caps.host,
        "gpu": caps.gpu_name or "cpu",
        "gpu_memory": caps.total_memory,
        "compute_capability": list(caps.compute_capability) if caps.compute_capability else None,
        "versions": dict(caps.versions),
    }


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


def ensure_materialized(model: ModelInfo, caps: Capabilities, observer: Observer) -> None:
    """Build a preset's local folder before the first trial (once per machine), showing its progress."""
    if model.source != "preset" or is_materialized(model.reference, cache_dir()):
        return
    from qco_tune.core.presets import get_preset
    from qco_tune.measure.materializing import materialize_in_child

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
