"""The memory model against every recorded full-size trial, the skip rule, and the load phase.

Data: ``data/full_size_trials.json`` (copied from ``measurements/h200-2026-12-01/`` of the shared
measurements, the FLUX.1-dev 16 GiB study on an H200 and two hand-built float8 cases, and from
``studies/results/full_size/*.json``, FLUX.1-dev and Wan2.1-1.3B on an H100), and
``data/h200-flux-dev-16gib-partial.db``, a copy of that H200 study's Optuna storage
(``measurements/h200-2026-12-01/flux-dev-16gib-partial.db``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import optuna
import pytest
from fake_machines import H100, H200

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import PREDICTED_ATTR, PREDICTED_RAW_ATTR
from qco_tune.core.modelref import resolve_model
from qco_tune.core.records import Capabilities, ModelInfo
from qco_tune.core.spec import parse_spec, spec_from_dict
from qco_tune.core.studyspec import StudySpec, Workload
from qco_tune.search import memory
from qco_tune.search.calibration import calibrate, fit, high_quantile
from qco_tune.search.memory import Correction, MemoryPrediction, budget_check, predict, skip_margin
from qco_tune.search.pareto import row_from_trial, summarize

GIB = 2**30
DATA = Path(__file__).parent / "data"
DB = DATA / "h200-flux-dev-16gib-partial.db"
STUDY = "flux.1-dev-16gib"
BUDGET = 16 * GIB
METRICS = ("device", "reserved", "allocated")


@cache
def _model(preset: str) -> ModelInfo:
    return resolve_model(preset, "random")


def _spec(trial: dict[str, Any], metric: str = "device") -> StudySpec:
    base = parse_spec(f'model = "{trial["preset"]}"\n[budget]\nvram = "16GiB"\ncounts = "{metric}"\n')
    return dataclasses.replace(base, workload=Workload(**trial["workload"]))


def _trials() -> list[dict[str, Any]]:
    return list(json.loads((DATA / "full_size_trials.json").read_text())["trials"])


def _trial(name: str) -> dict[str, Any]:
    return next(t for t in _trials() if t["name"] == name)


def _predict(trial: dict[str, Any], metric: str = "device", calibration: memory.Calibration | None = None) -> int:
    caps = H200 if trial["gpu"] == "H200" else H100
    config = TrialConfig.from_dict(trial["config"])
    value = predict(_model(trial["preset"]), config, _spec(trial, metric), caps, calibration)
    assert value.device_bytes is not None
    return value.device_bytes


def _table(metric: str) -> list[tuple[str, float, float, float]]:
    """(trial, predicted GiB, measured GiB, error) of every finished full-size trial, uncalibrated."""
    rows = []
    for trial in _trials():
        if trial["status"] != "ok":
            continue
        predicted, measured = _predict(trial, metric), trial[metric]
        rows.append((trial["name"], predicted / GIB, measured / GIB, predicted / measured - 1))
    return rows


@pytest.mark.parametrize("metric", METRICS)
def test_within_15_percent_on_90_percent_of_the_finished_full_size_trials(metric: str) -> None:
    table = _table(metric)
    assert len(table) == 11
    print("\n".join(f"{name:36} {p:6.2f} {m:6.2f} {e:+7.1%}" for name, p, m, e in table))
    within = [abs(e) <= 0.15 for *_, e in table]
    assert sum(within) / len(within) >= 0.9, table
    # The load phase: both offload recipes of the H200 study peaked at 10.26 GiB allocated, at load.
    errors = {name: e for name, _, _, e in table}
    assert abs(errors["h200-16gib-#4"]) <= 0.10 and abs(errors["h200-16gib-#5"]) <= 0.10


def test_the_uncalibrated_margin_covers_every_over_prediction_of_the_recorded_trials() -> None:
    worst = max(e for *_, e in _table("device"))
    assert 0 < worst <= memory.UNCALIBRATED_MARGIN
    assert memory.UNCALIBRATED_MARGIN - worst < 0.05  # and is not much wider than it


@pytest.mark.parametrize("number", [8, 10, 12, 14])
def test_the_trials_that_ran_out_of_memory_are_skipped_now(number: int) -> None:
    """H200 trials 8, 10, 12 ran out of memory (36-48 s each); 14, predicted 1.45x over, was interrupted."""
    trial = _trial(f"h200-16gib-#{number}")
    predicted = _predict(trial)
    if trial["status"] == "oom":  # what it had allocated when it failed is a lower bound of its need
        assert predicted > trial["device"]
    check = budget_check(MemoryPrediction(predicted, None, ""), BUDGET)
    assert check is not None and check.over and check.margin == memory.UNCALIBRATED_MARGIN


@pytest.mark.parametrize("number", [2, 4, 5])
def test_the_feasible_recipes_still_run(number: int) -> None:
    """NF4 + compile peaked at 15.7 GiB against the 16 GiB budget; the offload recipes at 15.0 and 11.0 GiB."""
    check = budget_check(MemoryPrediction(_predict(_trial(f"h200-16gib-#{number}")), None, ""), BUDGET)
    assert check is not None and not check.over


def test_the_skip_margin_is_the_calibrations_own_error_with_a_floor_and_a_cap() -> None:
    assert skip_margin(None) == skip_margin(Correction()) == memory.UNCALIBRATED_MARGIN
    assert skip_margin(Correction(trials=3, error=0.01)) == memory.MARGIN_FLOOR
    assert skip_margin(Correction(trials=3, error=0.12)) == pytest.approx(0.12)
    assert skip_margin(Correction(trials=3, error=3.0)) == memory.MARGIN_CAP
    assert high_quantile([0.01, 0.5, 0.02]) == 0.5  # the maximum below ten trials
    assert high_quantile([0.01] * 19 + [0.9]) == 0.01  # one odd trial in twenty does not set it
    assert fit([]).error is None


def test_calibrated_on_the_h200_study_the_margin_comes_from_its_residuals() -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{DB}")
    study = optuna.load_study(study_name=STUDY, storage=storage)
    spec, model = spec_from_dict(study.user_attrs["qco.spec"]), _model("flux.1-dev")
    complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    calibration = calibrate(map(row_from_trial, complete), model, spec, H200)
    correction = calibration.device
    assert correction.trials == 4 and correction.error is not None
    assert memory.MARGIN_FLOOR <= skip_margin(correction) <= memory.UNCALIBRATED_MARGIN
    for number, over in [(2, False), (4, False), (5, False), (8, True), (10, True), (12, True), (14, True)]:
        config = TrialConfig.from_dict(_trial(f"h200-16gib-#{number}")["config"])
        check = budget_check(predict(model, config, spec, H200, calibration), spec.vram_budget)
        assert check is not None and check.over is over, (number, check)
        assert check.trials == 4 and check.margin == skip_margin(correction)


def _context(tmp_path: Path) -> Any:
    from qco_tune.loop.context import SilentObserver, StudyContext
    from qco_tune.search.space import SearchSpace

    path = tmp_path / DB.name
    shutil.copy(DB, path)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{path}")
    spec = spec_from_dict(study.user_attrs["qco.spec"])
    caps = Capabilities.from_dict(study.user_attrs["qco.capabilities"])
    model = _model("flux.1-dev")
    return StudyContext(spec, model, caps, SearchSpace.build(spec, model, caps), study, SilentObserver(), {})


def test_the_skip_reason_states_the_prediction_the_margin_and_the_budget(tmp_path: Path) -> None:
    from qco_tune.loop.trial import recalibrate, why_not_run

    ctx = _context(tmp_path)
    config = TrialConfig.from_dict(_trial("h200-16gib-#10")["config"])
    reason = why_not_run(ctx, config, {})
    assert reason is not None and "\n" not in reason[0]
    assert reason[0].endswith("(uncalibrated, margin 10%) is over the 16.0 GiB budget"), reason
    assert reason[0].startswith("predicted ") and reason[1] > 0
    recalibrate(ctx)
    margin = skip_margin(ctx.calibration.device)
    reason = why_not_run(ctx, config, {})
    assert reason is not None and f"(calibrated on 4 trial(s), margin {margin:.0%})" in reason[0]
    # The hook for the reference, which is measured whatever its prediction.
    assert why_not_run(ctx, TrialConfig(), {}) is not None
    assert why_not_run(ctx, TrialConfig(), {}, check_budget=False) is None
    nf4_compile = TrialConfig.from_dict(_trial("h200-16gib-#2")["config"])
    assert why_not_run(ctx, nf4_compile, {}) is None


def test_stored_predictions_of_an_older_memory_model_read_back_unchanged(tmp_path: Path) -> None:
    """The H200 study's predictions came from the model before the load phase: show and the summary
    report them as stored (they are data), and do not predict again."""
    from qco_tune.loop.summary import memory_model_dict

    ctx = _context(tmp_path)
    trials = ctx.study.get_trials()
    stored = {t.number: (t.user_attrs.get(PREDICTED_ATTR), t.user_attrs.get(PREDICTED_RAW_ATTR)) for t in trials}
    summary = summarize(trials, BUDGET)
    for row in summary.rows:
        assert (row.predicted_bytes, row.predicted_raw_bytes) == stored[row.number]
    listed = {t["number"]: t for t in memory_model_dict(summary)["trials"]}
    assert set(listed) == {1, 2, 4, 5}
    for number, entry in listed.items():
        assert (entry["predicted_bytes"], entry["predicted_raw_bytes"]) == stored[number]
    # Trial 4 was predicted 5.8 GiB then; the model of today predicts about 16 GiB.
    assert listed[4]["predicted_bytes"] == pytest.approx(5.77 * GIB, rel=0.01)
    assert listed[4]["error"] == pytest.approx(-0.615, abs=0.005)
    assert _predict(_trial("h200-16gib-#4")) > 15 * GIB


# -- the load phase ----------------------------------------------------------------------------------------

NF4 = (("text_encoder_2", "bnb_nf4"), ("transformer", "bnb_nf4"))


def _flux_terms(config: TrialConfig, metric: str = "device") -> tuple[memory.MemoryTerms, str]:
    spec = _spec({"preset": "flux.1-dev", "workload": _trial("h200-16gib-#1")["workload"]}, metric)
    prediction = predict(_model("flux.1-dev"), config, spec, H200)
    assert prediction.device_terms is not None
    return prediction.device_terms, prediction.detail


def test_bnb_with_model_offload_peaks_at_load_with_every_quantized_component() -> None:
    terms, detail = _flux_terms(TrialConfig(quantization=NF4, offload="model"), "allocated")
    assert detail.startswith("load: text_encoder_2, transformer on the device")
    assert terms.activations == 0 and terms.quantized + terms.weights > 10 * GIB  # measured 10.26 GiB
    resident, _ = _flux_terms(TrialConfig(quantization=NF4), "allocated")
    assert terms.quantized == pytest.approx(resident.quantized)  # the same quantized weights, all at once


def test_bnb_with_group_offload_leaves_the_loads_blocks_reserved() -> None:
    config = TrialConfig(quantization=NF4, offload="group_leaf", use_stream=True, non_blocking=True)
    allocated, _ = _flux_terms(config, "allocated")
    reserved, detail = _flux_terms(config, "reserved")
    assert "left reserved" in detail and reserved.total > allocated.total + 4 * GIB
    # Model offload empties the cache when it starts: nothing of the load stays reserved there.
    model_offload, _ = _flux_terms(dataclasses.replace(config, offload="model"), "reserved")
    assert model_offload.total == pytest.approx(allocated.total)


def test_torchao_and_quanto_quantize_on_the_cpu_so_offloading_is_not_undone_at_load() -> None:
    for backend in ("torchao_fp8dq", "torchao_int8wo", "quanto_int8"):
        config = TrialConfig(quantization=(("transformer", backend),), offload="model")
        _, detail = _flux_terms(config)
        assert not detail.startswith("load"), (backend, detail)
    bnb = TrialConfig(quantization=(("text_encoder_2", "bnb_nf4"), ("transformer", "torchao_fp8dq")), offload="model")
    _, detail = _flux_terms(bnb)  # only the NF4 T5 is on the device at load: the transformer's phase is larger
    assert "model offload transformer" in detail


def test_a_backend_packed_on_the_gpu_loads_the_whole_pipeline_there() -> None:
    config = TrialConfig(quantization=(("transformer", "torchao_int4wo"),), offload="model")
    terms, detail = _flux_terms(config, "allocated")
    everything, _ = _flux_terms(TrialConfig(quantization=config.quantization), "allocated")
    assert detail.startswith("load:") and terms.total == pytest.approx(everything.total - everything.activations)


def test_bnb_8bit_weights_stay_on_the_device_under_offloading() -> None:
    int8 = TrialConfig(quantization=(("transformer", "bnb_int8"),), offload="model")
    terms, detail = _flux_terms(int8, "allocated")
    assert "8-bit weights staying on the device" in detail
    assert terms.quantized > 10 * GIB and terms.weights > 8 * GIB  # with the bf16 T5 encoding beside it
