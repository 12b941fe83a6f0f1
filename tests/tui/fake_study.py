"""A FAKE BACKEND for TUI tests and the open benchmark: studies filled with made-up trials.

Nothing here runs a pipeline. Trials are written through Optuna's own API into a real storage
with exactly the attributes ``qco_tune.loop.study`` records (``qco.config``, ``qco.measurement``,
``qco.memory_bytes``, ``qco.baseline``, ``qco.reason``, ``qco.status``, the ``vram`` constraint,
the study's ``qco.spec`` / ``qco.gpu`` / ``qco.model``), so the TUI reads them as it reads a real
study. Latency and memory come from a toy model of the guide's measurements plus noise.

Also a script, so a test can add trials from another process::

    python tests/tui/fake_study.py add sqlite:///x.db STUDY --count 3
"""

from __future__ import annotations

import argparse
import datetime
import random
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState

from qco_tune.core.config import COMPILE_MODES, COMPILE_SCOPES, OFFLOAD_KINDS, TrialConfig
from qco_tune.core.records import Measurement
from qco_tune.core.studyspec import StudySpec, Workload, spec_to_dict
from qco_tune.store.constraints import constraint_system_attrs, constraint_user_attrs

GIB = 2**30
FAKE_GPU = "FAKE H100 80GB (fake backend)"
BASELINES = ("reference", "nf4+regional", "group_leaf+stream", "model-offload")

TOY_BACKENDS = ("none", "bnb_nf4", "bnb_fp4", "bnb_int8", "torchao_int8wo", "torchao_fp8dq", "quanto_int8")
"""The backends the toy model knows (the fake study and its screenshots predate the others)."""

_BOOL = CategoricalDistribution((False, True))
DISTRIBUTIONS: dict[str, BaseDistribution] = {
    "quant.transformer": CategoricalDistribution(TOY_BACKENDS),
    "quant.text_encoder_2": CategoricalDistribution(TOY_BACKENDS),
    "compile": CategoricalDistribution(COMPILE_SCOPES),
    "compile_mode": CategoricalDistribution(COMPILE_MODES),
    "fullgraph": _BOOL,
    "offload": CategoricalDistribution(OFFLOAD_KINDS),
    "blocks_per_group": CategoricalDistribution((1, 2, 4)),
    "use_stream": _BOOL,
    "non_blocking": _BOOL,
    "record_stream": _BOOL,
    "low_cpu_mem_usage": _BOOL,
}

_QUANT_SPEED = {
    "none": 1.0,
    "bnb_nf4": 1.09,
    "bnb_fp4": 1.1,
    "bnb_int8": 1.6,
    "torchao_int8wo": 1.3,
    "torchao_fp8dq": 1.25,
    "quanto_int8": 1.4,
}
_QUANT_GIB = {
    "none": 22.7,
    "bnb_nf4": 6.8,
    "bnb_fp4": 6.8,
    "bnb_int8": 12.0,
    "torchao_int8wo": 12.2,
    "torchao_fp8dq": 12.3,
    "quanto_int8": 12.1,
}
_OFFLOAD = {
    "none": (1.0, 1.0),
    "model": (1.25, 0.45),
    "sequential": (6.0, 0.05),
    "group_block": (1.8, 0.12),
    "group_leaf": (2.1, 0.03),
}


def baseline_configs() -> dict[str, TrialConfig]:
    """The fake study's seeded recipes (names as the TUI shows them)."""
    return {
        "reference": TrialConfig(),
        "nf4+regional": TrialConfig(quantization=(("transformer", "bnb_nf4"),), compile="regional"),
        "group_leaf+stream": TrialConfig(offload="group_leaf", use_stream=True),
        "model-offload": TrialConfig(offload="model"),
    }


def random_config(rng: random.Random) -> TrialConfig:
    compile_ = rng.choice(COMPILE_SCOPES)
    offload = rng.choice(OFFLOAD_KINDS)
    return TrialConfig(
        quantization=(("transformer", rng.choice(TOY_BACKENDS)), ("text_encoder_2", rng.choice(("none", "bnb_nf4")))),
        compile=compile_,
        compile_mode=rng.choice(COMPILE_MODES),
        fullgraph=rng.random() < 0.3,
        offload=offload,
        blocks_per_group=rng.choice((1, 2, 4)),
        use_stream=rng.random() < 0.5,
        non_blocking=rng.random() < 0.5,
    )


def toy_measure(config: TrialConfig, rng: random.Random) -> tuple[float, int]:
    """(latency s, peak device bytes) of a configuration under the toy model."""
    transformer = config.backend_for("transformer")
    latency = 5.36 * _QUANT_SPEED[transformer]
    if config.compile != "none":
        latency *= 0.72 if transformer != "torchao_fp8dq" else 0.45
    slow, keep = _OFFLOAD[config.offload]
    if config.use_stream and config.is_group_offload:
        slow = 1 + (slow - 1) * 0.4
    latency *= slow * rng.uniform(0.97, 1.05)
    gib = _QUANT_GIB[transformer] + (3.0 if config.backend_for("text_encoder_2") == "bnb_nf4" else 9.1) + 2.6 + 1.5
    gib = gib * keep + 0.8 + rng.uniform(0.0, 0.4)
    return latency, int(gib * GIB)


def _measurement(status: str, latency: float | None, peak: int | None, rng: random.Random, **extra: Any) -> Measurement:
    if latency is None or peak is None:
        return Measurement(status=status, device="cuda", **extra)  # type: ignore[arg-type]
    latencies = tuple(latency * rng.uniform(0.98, 1.02) for _ in range(3))
    return Measurement(
        status=status,  # type: ignore[arg-type]
        device="cuda",
        latency_s=latency,
        latency_spread_s=max(latencies) - min(latencies),
        latencies_s=latencies,
        step_time_s=latency / 28,
        load_s=rng.uniform(8, 14),
        first_call_s=latency + (rng.uniform(15, 120) if latency < 4.5 else 0.5),
        peak_device_bytes=peak,
        peak_allocated_bytes=int(peak * 0.85),
        peak_reserved_bytes=int(peak * 0.93),
        peak_host_bytes=int(rng.uniform(6, 40) * GIB),
        extra={"psnr_db": round(rng.uniform(28, 60), 1)},
        **extra,
    )


def fake_trial(
    number: int,
    rng: random.Random,
    budget: int,
    *,
    config: TrialConfig | None = None,
    baseline: str | None = None,
    kind: str | None = None,
    now: datetime.datetime | None = None,
) -> optuna.trial.FrozenTrial:
    """One made-up finished trial: ``kind`` is ok, failed, skipped, running or old (None: drawn at random)."""
    config = config or random_config(rng)
    if kind is None:
        draw = rng.random()
        kind = "failed" if draw < 0.06 else "skipped" if draw < 0.16 else "ok"
    params = config.to_params()
    dists = {k: DISTRIBUTIONS[k] for k in params}
    attrs: dict[str, Any] = {"qco.config": config.to_dict()}
    if baseline:
        attrs["qco.baseline"] = baseline
    start = (now or datetime.datetime(2026, 11, 24, 6, 0)) + datetime.timedelta(seconds=40 * number)
    common: dict[str, Any] = {"params": params, "distributions": dists}
    if kind == "running":
        return optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=attrs, **common)
    if kind == "skipped":
        attrs.update({"qco.reason": "duplicate of trial 0 (measured)", "qco.status": "skipped"})
        skipped = constraint_system_attrs({"vram": 1.0})
        attrs.update(constraint_user_attrs({"vram": 1.0}))
        return _timed(
            optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=attrs, system_attrs=skipped, **common), start
        )
    latency, peak = toy_measure(config, rng)
    if kind == "failed":
        reason = (
            "out of memory: CUDA out of memory. Tried to allocate 1.50 GiB"
            if rng.random() < 0.6
            else "crash: signal 11"
        )
        tail = "\n".join(f'  File "pipeline.py", line {100 + i}, in __call__' for i in range(6)) + "\n" + reason
        m = _measurement(
            "oom" if reason.startswith("out") else "crash", None, None, rng, reason=reason, output_tail=tail
        )
        attrs.update(
            {
                "qco.measurement": m.to_dict(),
                "qco.status": m.status,
                "qco.reason": reason,
                "qco.predicted_device_bytes": peak,
            }
        )
        return _timed(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs, **common), start)
    m = _measurement("ok", latency, peak, rng)
    if kind == "old":  # as an older qco-tune wrote it: params and values only
        return _timed(
            optuna.trial.create_trial(state=TrialState.COMPLETE, values=[latency, peak / GIB], **common), start
        )
    attrs.update(
        {
            "qco.measurement": m.to_dict(),
            "qco.status": "ok",
            "qco.memory_bytes": peak,
            "qco.predicted_device_bytes": int(peak * rng.uniform(0.9, 1.15)),
        }
    )
    constraints = {"vram": (peak - budget) / GIB}
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        values=[latency, peak / GIB],
        user_attrs={**attrs, **constraint_user_attrs(constraints)},
        system_attrs=constraint_system_attrs(constraints),
        **common,
    )
    return _timed(trial, start)


def _timed(trial: optuna.trial.FrozenTrial, start: datetime.datetime) -> optuna.trial.FrozenTrial:
    trial.datetime_start = start
    trial.datetime_complete = start + datetime.timedelta(seconds=30)
    return trial


def fake_spec(name: str, budget: int, model: str = "flux.1-dev") -> dict[str, Any]:
    """The stored spec of a fake study, as ``spec_to_dict`` writes a real one."""
    workload = Workload(prompt="a photo of an astronaut", height=1024, width=1024, steps=28, seed=0)
    return spec_to_dict(StudySpec(name=name, model=model, vram_budget=budget, trials=40, workload=workload))


def fake_model(model: str = "flux.1-dev") -> dict[str, Any]:
    """The stored model description (a real preset's metadata: no weights involved)."""
    from qco_tune.core.modelref import resolve_model

    return resolve_model(model, "random").to_dict()


def fast_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage; for SQLite without fsync per commit (a fake study is rebuilt, never precious)."""
    storage = optuna.storages.RDBStorage(url)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        @event.listens_for(storage.engine, "connect")
        def _no_sync(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA synchronous=OFF")

        storage.engine.dispose()
    return storage


def create_fake_study(
    url: str, name: str, *, budget: int = 16 * GIB, gpu: str = FAKE_GPU, model: str = "flux.1-dev"
) -> optuna.Study:
    """An empty study with the user attributes ``qco_tune.loop.study.open_study`` sets."""
    study = optuna.create_study(study_name=name, storage=fast_storage(url), directions=["minimize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["latency_s", "peak_memory_gib"])
    study.set_user_attr("qco.spec", fake_spec(name, budget, model))
    study.set_user_attr("qco.gpu", gpu)
    study.set_user_attr("qco.model", fake_model(model))
    study.set_user_attr("qco.capabilities", {"cuda": True, "gpu_name": gpu, "host": "fake-host"})
    return study


def fake_trials(
    n: int, *, seed: int = 0, budget: int = 16 * GIB, baselines: bool = True, start: int = 0
) -> Iterator[optuna.trial.FrozenTrial]:
    rng = random.Random(seed)
    seeded = list(baseline_configs().items()) if baselines and start == 0 else []
    for i in range(start, start + n):
        if i - start < len(seeded):
            name, config = seeded[i - start]
            yield fake_trial(i, rng, budget, config=config, baseline=name, kind="ok")
        else:
            yield fake_trial(i, rng, budget)


def fill_fake_study(
    url: str,
    name: str,
    n_trials: int,
    *,
    seed: int = 0,
    budget: int = 16 * GIB,
    gpu: str = FAKE_GPU,
    baselines: bool = True,
    extra_kinds: tuple[str, ...] = (),
) -> optuna.Study:
    """Create study ``name`` in ``url`` with ``n_trials`` fake trials (seeded recipes first).

    ``extra_kinds`` appends trials of given kinds (``failed``, ``running``, ``old``, ``skipped``).
    """
    study = create_fake_study(url, name, budget=budget, gpu=gpu)
    trials = list(fake_trials(n_trials, seed=seed, budget=budget, baselines=baselines))
    rng = random.Random(seed + 1)
    for j, kind in enumerate(extra_kinds):
        trials.append(fake_trial(n_trials + j, rng, budget, kind=kind))
    study.add_trials(trials)
    return study


def add_fake_trials(url: str, name: str, count: int, *, seed: int = 99) -> None:
    """Append ``count`` finished fake trials to an existing study (used from another process)."""
    study = optuna.load_study(study_name=name, storage=fast_storage(url))
    budget = int(study.user_attrs.get("qco.spec", {}).get("vram_budget", 16 * GIB))
    start = len(study.get_trials(deepcopy=False))
    rng = random.Random(seed)
    study.add_trials([fake_trial(start + i, rng, budget, kind="ok") for i in range(count)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fill = sub.add_parser("fill")
    add = sub.add_parser("add")
    for p in (fill, add):
        p.add_argument("url")
        p.add_argument("name")
    fill.add_argument("--trials", type=int, default=40)
    fill.add_argument("--budget-gib", type=float, default=16)
    fill.add_argument("--gpu", default=FAKE_GPU)
    add.add_argument("--count", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.command == "fill":
        fill_fake_study(args.url, args.name, args.trials, budget=int(args.budget_gib * GIB), gpu=args.gpu)
    else:
        add_fake_trials(args.url, args.name, args.count)


if __name__ == "__main__":
    main()
