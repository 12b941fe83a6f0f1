"""The memory model on recorded GPU measurements, before and after it calibrates itself on a study's trials.

The figures are H100 measurements (random weights): DESIGN.md's whole-pipeline runs and the runs of
studies/results (FLUX.1-dev at 1024x1024, 28 steps; Wan2.1-1.3B at 480x832, 33 frames; the tiny
pipeline's GPU studies and its 4096x4096 export check).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
from fake_machines import H100
from optuna.trial import TrialState

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Measurement, ModelInfo
from qco_tune.core.spec import parse_spec, spec_from_dict
from qco_tune.core.studyspec import StudySpec, Workload
from qco_tune.search import memory
from qco_tune.search.calibration import Sample, calibrate, error_summary, fit, fit_configs, row_errors
from qco_tune.search.memory import Calibration, Correction, MemoryTerms, predict, predict_terms
from qco_tune.search.pareto import row_from_trial

GIB = 2**30
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "studies" / "results" / "issue2-h100"
NF4_FLUX = TrialConfig(quantization=(("text_encoder_2", "bnb_nf4"), ("transformer", "bnb_nf4")))
NF4_WAN = TrialConfig(quantization=(("text_encoder", "bnb_nf4"), ("transformer", "bnb_nf4")))
NF4_COMPILE = TrialConfig(
    quantization=NF4_FLUX.quantization, compile="full", compile_mode="max-autotune", fullgraph=True
)
LEAF_STREAM = TrialConfig(offload="group_leaf", use_stream=True, non_blocking=True)

FLUX_DEVICE = [(TrialConfig(), 36.8), (NF4_FLUX, 16.1), (NF4_COMPILE, 16.4), (LEAF_STREAM, 6.1)]
"""FLUX.1-dev, 1024x1024, 28 steps: NVML device-used peaks in GiB."""
WAN_DEVICE = [(TrialConfig(), 20.9), (NF4_WAN, 14.0)]
"""Wan2.1-T2V-1.3B, 480x832, 33 frames: NVML device-used peaks in GiB."""


def spec(model: str, counts: str = "device", workload: str = "", budget: str = "16GiB") -> StudySpec:
    return parse_spec(f'model = "{model}"\n{workload}[budget]\nvram = "{budget}"\ncounts = "{counts}"\n')


def error(model: ModelInfo, config: TrialConfig, study: StudySpec, measured_gib: float) -> float:
    predicted = predict(model, config, study, H100).device_bytes
    assert predicted is not None
    return predicted / (measured_gib * GIB) - 1


@pytest.fixture
def wan() -> ModelInfo:
    from qco_tune.core.modelref import resolve_model

    return resolve_model("wan2.1-t2v-1.3b", "random")


def test_uncalibrated_within_15_percent_of_the_h100_measurements(flux: ModelInfo, wan: ModelInfo) -> None:
    cases = [(flux, c, spec("flux.1-dev"), v) for c, v in FLUX_DEVICE]
    cases += [(wan, c, spec("wan2.1-t2v-1.3b"), v) for c, v in WAN_DEVICE]
    cases += [
        (flux, TrialConfig(), spec("flux.1-dev", "allocated"), 33.9),
        (flux, NF4_FLUX, spec("flux.1-dev", "allocated"), 13.1),
        (flux, NF4_FLUX, spec("flux.1-dev", "reserved"), 15.4),
    ]
    errors = [error(*case) for case in cases]
    assert all(abs(e) <= 0.15 for e in errors), errors


def test_the_tiny_model_at_4096_is_no_longer_over_predicted(tiny: ModelInfo) -> None:
    # studies/results/export-gpu-h100-2026-11-24.md: allocator peak 1,671,379,968 B (was predicted 40 GiB).
    big = spec(
        "tiny-flux", "allocated", "[workload]\nheight = 4096\nwidth = 4096\nsteps = 30\nmax_sequence_length = 64\n"
    )
    assert abs(error(tiny, TrialConfig(), big, 1_671_379_968 / GIB)) < 0.25
    # The VAE decode dominates there: its activations follow the tiny VAE's 8 channels, not FLUX.1's 256.
    terms = predict_terms(tiny, TrialConfig(), big, H100)
    assert terms is not None and terms[0].activations < 2 * GIB


def test_quantization_keeps_text_embeddings_and_t5_output_projections_at_the_dtype(wan: ModelInfo) -> None:
    # UMT5's 256384 x 4096 embedding stays bf16 under bnb (2.1 GB that 4-bit would put at 0.6 GB), and so do
    # the 24 feed-forward output projections (10240 x 4096) transformers keeps out of quantization.
    terms = predict_terms(wan, NF4_WAN, spec("wan2.1-t2v-1.3b", "allocated"), H100)
    assert terms is not None
    embedding, wo, vae = 256_384 * 4_096 * 2, 24 * 10_240 * 4_096 * 2, 126_892_531 * 2
    assert terms[0].weights == pytest.approx(embedding + wo + vae, rel=1e-6)


FULL_SIZE = sorted((RESULTS.parent / "full_size").glob("*.json"))


def _full_size(path: Path, metric: str) -> tuple[ModelInfo, TrialConfig, StudySpec, Measurement]:
    from qco_tune.core.modelref import resolve_model

    data = json.loads(path.read_text())
    study = dataclasses.replace(spec(data["preset"], metric), workload=Workload(**data["workload"]))
    config = TrialConfig.from_dict(data["config"])
    return resolve_model(data["preset"], "random"), config, study, Measurement.from_dict(data["measurement"])


@pytest.mark.parametrize("path", FULL_SIZE, ids=lambda p: p.stem)
def test_uncalibrated_within_15_percent_of_each_full_size_run_in_every_metric(path: Path) -> None:
    """studies/results/full_size: FLUX.1-dev and Wan2.1-1.3B trials through the real runner on an H100."""
    errors = {}
    for metric in ("device", "reserved", "allocated"):
        model, config, study, m = _full_size(path, metric)
        prediction = predict(model, config, study, H100)
        assert prediction.device_bytes is not None and prediction.host_bytes is not None
        errors[metric] = prediction.device_bytes / (m.memory_for(metric) or 1) - 1  # type: ignore[arg-type]
    errors["host"] = prediction.host_bytes / (m.peak_host_bytes or 1) - 1
    assert all(abs(e) <= 0.15 for e in errors.values()), errors


def test_host_ram_calibrates_too() -> None:
    from qco_tune.search.pareto import TrialRow

    assert len(FULL_SIZE) >= 3
    flux = [p for p in FULL_SIZE if p.stem.startswith("flux")]
    rows = []
    for number, path in enumerate(flux):
        model, config, study, m = _full_size(path, "device")
        rows.append(TrialRow(number, "front", config, m, m.latency_s, m.peak_device_bytes, None, None, None))
    calibration = calibrate(rows, model, study, H100)
    assert calibration.host.trials == calibration.device.trials == len(flux)
    for row in rows:
        assert row.config is not None and row.measurement is not None
        raw = predict(model, row.config, study, H100)
        fitted = predict(model, row.config, study, H100, calibration)
        measured = row.measurement.peak_host_bytes
        assert raw.host_bytes is not None and fitted.host_bytes is not None and measured
        assert abs(fitted.host_bytes / measured - 1) <= max(0.03, abs(raw.host_bytes / measured - 1))


def leave_one_out(model: ModelInfo, study: StudySpec, points: list[tuple[TrialConfig, float]]) -> list[float]:
    """Each trial predicted by the model calibrated on the study's other trials."""
    errors = []
    for i, (config, measured) in enumerate(points):
        others = [(c, v * GIB) for j, (c, v) in enumerate(points) if j != i]
        correction = fit_configs(model, study, H100, others)
        terms = predict_terms(model, config, study, H100)
        assert terms is not None
        errors.append(correction.apply(terms[0]) / (measured * GIB) - 1)
    return errors


def test_calibrated_on_the_other_flux_trials_each_is_within_5_percent(flux: ModelInfo) -> None:
    study = spec("flux.1-dev")
    raw = [error(flux, c, study, v) for c, v in FLUX_DEVICE]
    calibrated = leave_one_out(flux, study, FLUX_DEVICE)
    assert all(abs(e) <= 0.05 for e in calibrated), calibrated
    assert sorted(map(abs, calibrated))[1] < sorted(map(abs, raw))[1]  # the median improves


def _recorded_study(name: str) -> tuple[StudySpec, list[tuple[TrialConfig, float]]]:
    data = json.loads((RESULTS.parent / name).read_text())
    points = [
        (TrialConfig.from_dict(t["config"]), t["memory_bytes"] / GIB)
        for t in data["trials"]
        if t["category"] in ("front", "dominated", "infeasible")
    ]
    return spec_from_dict(data["spec"]), points


@pytest.mark.parametrize(
    "name",
    [
        "issue2-h100/default-gpu.json",
        "issue2-h100/tiny-gpu.json",
        "issue2-h100/tiny-gpu-first-visits.json",
        "tiny-h100-h200/tiny-gpu-h200.json",
    ],
)
def test_calibration_learns_what_the_tiny_gpu_studies_measured(tiny: ModelInfo, name: str) -> None:
    """Tiny models are all overhead: the CUDA context, workspaces and kernels that no term predicts exactly."""
    study, points = _recorded_study(name)
    assert len(points) >= 6
    raw = error_summary((i, (1 + error(tiny, c, study, v)) * v, v) for i, (c, v) in enumerate(points))
    calibrated = error_summary(
        (i, (1 + e) * v, v)
        for i, (e, (_, v)) in enumerate(zip(leave_one_out(tiny, study, points), points, strict=True))
    )
    assert raw.median_abs is not None and raw.worst_abs is not None and raw.within is not None
    assert calibrated.median_abs is not None and calibrated.worst_abs is not None
    assert calibrated.within == 1.0 and raw.within < 1.0
    assert calibrated.median_abs < raw.median_abs and calibrated.worst_abs < raw.worst_abs
    fitted = fit_configs(tiny, study, H100, [(c, v * GIB) for c, v in points])
    # Learnt as a constant (more context than assumed), not as a scale of the tiny weights.
    assert fitted.offset > 0.02 * GIB
    assert fitted.weights == pytest.approx(1, abs=0.02) and fitted.activations == pytest.approx(1, abs=0.02)


def test_one_odd_trial_does_not_drag_the_others(tiny: ModelInfo) -> None:
    study, points = _recorded_study("issue2-h100/tiny-gpu.json")
    odd = [*points, (points[0][0], points[0][1] * 3)]
    correction = fit_configs(tiny, study, H100, [(c, v * GIB) for c, v in odd])
    for config, measured in points:
        terms = predict_terms(tiny, config, study, H100)
        assert terms is not None
        assert abs(correction.apply(terms[0]) / (measured * GIB) - 1) < 0.15


def test_fit_with_nothing_is_the_model_itself_and_unused_terms_keep_their_scale() -> None:
    assert fit([]) == Correction()
    terms = MemoryTerms(weights=10 * GIB, activations=2 * GIB, overhead=0.5 * GIB)
    correction = fit([Sample(terms, 14 * GIB), Sample(MemoryTerms(weights=20 * GIB, overhead=0.5 * GIB), 24 * GIB)])
    assert correction.quantized == 1.0 and correction.trials == 2
    assert correction.weights > 1.05
    assert abs(correction.apply(terms) / (14 * GIB) - 1) < abs(terms.total / (14 * GIB) - 1)


def test_one_trial_moves_the_model_towards_it() -> None:
    terms = MemoryTerms(weights=10 * GIB, overhead=0.5 * GIB)
    correction = fit([Sample(terms, 13 * GIB)])
    assert terms.total < correction.apply(terms) <= 13.05 * GIB


def test_error_summary() -> None:
    summary = error_summary([(1, 110, 100), (2, 80, 100), (3, 100, 100), (4, 150, 100), (5, 5, 0)])
    assert summary.trials == 4
    assert summary.median_abs == pytest.approx(0.15)
    assert summary.worst_abs == pytest.approx(0.5) and summary.worst_trial == 4
    assert summary.within == pytest.approx(0.5)  # +10% and 0% are within ±15%; -20% and +50% are not
    assert "median 15%" in summary.describe() and "#4" in summary.describe()
    assert error_summary([]).trials == 0 and "no finished trial" in error_summary([]).describe()


def _study_with_trials(url: str, flux_spec: StudySpec) -> optuna.Study:
    from qco_tune.core.studyspec import spec_to_dict

    study = optuna.create_study(study_name="mem", storage=url, directions=["minimize", "minimize"])
    study.set_user_attr("qco.spec", spec_to_dict(flux_spec))
    study.set_user_attr("qco.gpu", H100.gpu_name)
    for number, (config, gib) in enumerate(FLUX_DEVICE):
        raw = predict(memory_model(), config, flux_spec, H100).device_bytes
        m = {"status": "ok", "device": "cuda", "latency_s": 5.0 + number, "peak_device_bytes": int(gib * GIB)}
        attrs = {
            "qco.config": config.to_dict(),
            "qco.measurement": m,
            "qco.memory_bytes": int(gib * GIB),
            "qco.predicted_device_bytes": int(gib * GIB * (1.02 if number else 0.9)),
            "qco.predicted_raw_bytes": raw,
        }
        over = gib * GIB - flux_spec.vram_budget
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                values=[5.0 + number, gib],
                user_attrs=attrs,
                constraints={"vram": over / GIB},
            )
        )
    return study


def memory_model() -> ModelInfo:
    from qco_tune.core.modelref import resolve_model

    return resolve_model("flux.1-dev", "random")


def test_the_loop_calibrates_on_finished_trials_and_says_so_when_it_skips(tmp_path: Path, flux: ModelInfo) -> None:
    from qco_tune.loop.context import SilentObserver, StudyContext
    from qco_tune.loop.trial import recalibrate, why_not_run
    from qco_tune.search.space import SearchSpace

    flux_spec = spec("flux.1-dev", budget="20GiB")
    study = _study_with_trials(f"sqlite:///{tmp_path}/m.db", flux_spec)
    space = SearchSpace.build(flux_spec, flux, H100)
    ctx = StudyContext(flux_spec, flux, H100, space, study, SilentObserver(), {})
    assert ctx.calibration == Calibration()
    reason = why_not_run(ctx, TrialConfig(), {})
    assert reason is not None and "uncalibrated" in reason[0] and "20.0 GiB budget" in reason[0]
    recalibrate(ctx)
    assert ctx.calibration.device.trials == len(FLUX_DEVICE)
    reason = why_not_run(ctx, TrialConfig(), {})
    assert reason is not None and "calibrated on 4 trial(s)" in reason[0]
    calibrated = calibrate(map(row_from_trial, study.get_trials()), flux, flux_spec, H100)
    assert memory.predict(flux, NF4_FLUX, flux_spec, H100, calibrated).device_bytes == pytest.approx(
        16.1 * GIB, rel=0.03
    )


def test_show_lists_predicted_against_measured(tmp_path: Path, flux: ModelInfo) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/m.db"
    study = _study_with_trials(url, spec("flux.1-dev", budget="20GiB"))
    rows = [row_from_trial(t) for t in study.get_trials()]
    feasible = row_errors(rows, feasible_only=True)
    assert feasible.trials == 3 and feasible.worst_abs == pytest.approx(0.02, abs=1e-3)
    assert row_errors(rows).worst_trial == 0
    env = {"PYTHONPATH": str(REPO), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "qco_tune", "show", "mem", "--storage", url],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "memory model: predicted before running against measured" in out.stdout
    assert "-10.0%" in out.stdout and "+2.0%" in out.stdout
    assert "memory model error, feasible trials: median 2%, worst 2%" in out.stdout
    assert "before calibration" in out.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "qco_tune", "show", "mem", "--json", "--storage", url],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    data = json.loads(as_json.stdout)["memory_model"]
    assert data["feasible"]["trials"] == 3 and data["finished"]["worst_trial"] == 0
    assert data["finished"]["share_within"] == pytest.approx(1.0)
    assert len(data["trials"]) == 4 and data["trials"][0]["error"] == pytest.approx(-0.1, abs=1e-3)
    assert data["trials"][0]["raw_error"] is not None
