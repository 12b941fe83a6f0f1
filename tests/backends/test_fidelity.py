"""Fidelity: PSNR and latent cosine against the study's reference, in-process and through the trial child.

The child runs use ``tiny-wan``, so the video path (frames, the Wan VAE, UniPC) is covered too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from backend_helpers import run_child

from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import Measurement, TrialRequest
from qco_tune.measure.backends import fidelity


def test_psnr_and_cosine() -> None:
    a = np.zeros((1, 4, 4, 3), dtype=np.float32)
    assert fidelity.psnr(a, a) == math.inf
    assert fidelity.psnr(a + 0.1, a) == pytest.approx(20.0)  # mse 0.01 -> 20 dB
    x = np.arange(1, 9, dtype=np.float32)
    assert fidelity.cosine(x, x) == 1.0 and fidelity.cosine(x, -x) == pytest.approx(-1.0)
    assert fidelity.cosine(np.zeros(3), x[:3]) is None
    with pytest.raises(ValueError, match="differs from the reference"):
        fidelity.psnr(a, np.zeros((1, 4, 4, 4)))


def test_reference_round_trip(tmp_path: Path) -> None:
    out, lat = np.random.default_rng(0).random((1, 8, 8, 3)), np.ones((1, 16, 4))
    assert fidelity.compare(tmp_path, out, lat) is None  # no reference yet
    fidelity.save_reference(tmp_path, out, lat, {"trial": 3, "offload": "model"})
    found = fidelity.compare(tmp_path, out * 0.99, lat)
    assert found is not None and 30 < found["psnr_db"] < math.inf and found["latent_cosine"] == 1.0
    assert found["reference"] == {"trial": 3, "offload": "model"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latents.npy", "output.npy", "reference.json"]


def test_final_latents_are_those_of_the_last_step() -> None:
    seen: list[int] = []
    capture = fidelity.FinalLatents(lambda pipe, step, t, kw: seen.append(step) or kw)
    capture.enabled = True
    for step in range(3):
        capture(None, step, None, {"latents": torch.full((2,), float(step))})
    assert seen == [0, 1, 2] and capture.latents().tolist() == [2.0, 2.0]
    assert capture.latents() is None  # taken once


@pytest.mark.slow
def test_the_reference_trial_and_a_quantized_one(tmp_path: Path, qco_cache_dir: Path) -> None:
    """The reference's PSNR against itself is infinite (cosine 1); a quantized trial's is finite."""
    preset = get_preset("tiny-wan")
    reference_dir = tmp_path / "reference"

    def trial(config: TrialConfig, save: bool, folder: str) -> Measurement:
        request = TrialRequest(
            model=preset.model_info(),
            config=config,
            workload=preset.workload,
            dtype="bfloat16",
            device="cpu",
            timed_calls=2,
            max_timed_calls=2,
            warmup_calls=0,
            cache_dir=str(qco_cache_dir),
            reference_dir=str(reference_dir),
            save_reference=save,
        )
        (tmp_path / folder).mkdir()
        proc, m = run_child(request, tmp_path / folder)
        assert proc.returncode == 0 and m is not None and m.status == "ok", (proc.stderr[-2000:], m)
        return m

    ref = trial(TrialConfig(), True, "ref")
    assert ref.psnr_db == math.inf and ref.latent_cosine == 1.0
    assert ref.extra["reference"] == {"trial": 0, "offload": "none"}
    assert ref.extra["output_shape"] == [1, 5, 32, 32, 3]  # one video of 5 frames
    quantized = trial(TrialConfig(quantization=(("transformer", "torchao_int8wo"),)), False, "int8")
    assert quantized.psnr_db is not None and 10 < quantized.psnr_db < math.inf
    assert quantized.latent_cosine is not None and 0.9 < quantized.latent_cosine < 1.0
    assert "fidelity_error" not in quantized.extra


def test_a_reference_from_other_random_weights_is_not_compared(tmp_path: Path, qco_cache_dir: Path) -> None:
    from qco_tune.core.presets.cache import marker
    from qco_tune.measure.backends import child
    from qco_tune.measure.backends.materialize import materialize_preset

    preset = get_preset("tiny-wan")
    folder = materialize_preset(preset.name, qco_cache_dir).path
    assert len((marker(folder) or {})["fingerprint"]) == 16
    out, lat = np.full((1, 5, 8, 8, 3), 0.5), np.ones((1, 16, 2, 2, 2))
    fidelity.save_reference(tmp_path, out, lat, {"trial": 0, "weights": "from-another-build"})
    request = TrialRequest(
        model=preset.model_info(),
        config=TrialConfig(),
        workload=preset.workload,
        cache_dir=str(qco_cache_dir),
        reference_dir=str(tmp_path),
    )
    record = child.TrialRecord(device="cpu")
    child.measure_fidelity(request, record, out, lat)
    assert record.psnr_db is None and "other random weights" in record.extra["fidelity_error"]
