"""The tuning loop on a CUDA GPU (skipped without one): the embedded default, and a tiny study whose
space holds bitsandbytes, torchao, compilation and group offloading with streams.

Set QCO_GPU_STORAGE to keep the studies (the recorded results under studies/results/ come from it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import TrialRequest
from qco_tune.core.spec import load_default_spec, load_spec
from qco_tune.core.studyspec import Workload
from qco_tune.loop.study import run_study
from qco_tune.measure.runner import run_trial

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
REPO = Path(__file__).resolve().parents[2]


def _storage(tmp_path: Path) -> str:
    return os.environ.get("QCO_GPU_STORAGE") or f"sqlite:///{tmp_path / 'gpu.db'}"


def test_embedded_default_runs_on_the_gpu(tmp_path: Path) -> None:
    spec = load_default_spec()
    result = run_study(spec, storage_url=_storage(tmp_path))
    assert result.ran >= 1 and result.stopped == "trials"
    assert result.summary is not None and result.summary.best is not None
    best = result.summary.best.measurement
    assert best is not None and best.device == "cuda" and (best.peak_device_bytes or 0) > 0


def test_tiny_study_over_quantization_compile_and_streamed_offload(tmp_path: Path) -> None:
    spec = load_spec(REPO / "studies" / "tiny-gpu.toml")
    result = run_study(spec, storage_url=_storage(tmp_path))
    summary = result.summary
    # Cold starts with compilation take up to two minutes here: the spec's time limit may end the run.
    assert summary is not None and result.stopped in ("trials", "timeout")
    measured = [r for r in summary.rows if r.measurement is not None and r.measurement.status == "ok"]
    assert len(measured) >= 6, [(r.number, r.reason) for r in summary.rows]
    configs = [r.config for r in measured if r.config is not None]
    # Every family of knobs was measured at least once (the seeded recipes guarantee most of them).
    assert any(c.backend_for("transformer").startswith("bnb") for c in configs)
    assert any(c.compile != "none" for c in configs)
    assert any(c.is_group_offload and c.use_stream for c in configs)
    assert summary.best is not None
    # The guide's recipes that this space allows (its compile modes leave out max-autotune).
    for name in ("reference", "quantization", "quantization + compile + model offload", "quantization + group offload"):
        assert name in summary.baselines, sorted(summary.baselines)


def test_budget_is_enforced_on_a_larger_gpu(qco_cache_dir: Path) -> None:
    """A 2048² decode cannot fit 768 MiB (CUDA context included): the trial fails as it would on such a card."""
    request = TrialRequest(
        model=get_preset("tiny-flux").model_info(),
        config=TrialConfig(),
        workload=Workload(height=2048, width=2048, steps=2, max_sequence_length=32),
        device="cuda",
        memory_limit=768 * 2**20,
        cache_dir=str(qco_cache_dir),
    )
    measurement = run_trial(request, timeout=600)
    assert measurement.status == "oom", (measurement.status, measurement.reason)
