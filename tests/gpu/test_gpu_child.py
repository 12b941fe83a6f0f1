"""Trials of the tiny preset on a CUDA GPU through the real runner (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import TrialRequest
from qco_tune.core.studyspec import Workload
from qco_tune.measure.runner import run_trial

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

WORKLOAD = Workload(height=256, width=256, steps=4, guidance=3.5, max_sequence_length=64)


def _trial(config: TrialConfig, cache_dir: Path) -> TrialRequest:
    return TrialRequest(
        model=get_preset("tiny-flux").model_info(),
        config=config,
        workload=WORKLOAD,
        dtype="bfloat16",
        device="cuda",
        memory_limit=8 * 2**30,
        timed_calls=3,
        max_timed_calls=5,
        warmup_calls=1,
        cache_dir=str(cache_dir),
    )


def _assert_measured_on_gpu(request: TrialRequest) -> None:
    m = run_trial(request, timeout=900)
    assert m.status == "ok", (m.reason, m.output_tail)
    assert m.device == "cuda"
    assert m.peak_device_bytes is not None and m.peak_device_bytes > 0
    assert m.peak_allocated_bytes is not None and 0 < m.peak_allocated_bytes <= (m.peak_reserved_bytes or 0)
    assert m.peak_host_bytes is not None and m.peak_host_bytes > 0
    assert len(m.latencies_s) >= 3 and m.step_time_s is not None and m.step_time_s > 0
    assert (m.extra.get("cuda_context_bytes") or 0) > 0  # NVML saw the CUDA context


def test_bnb_nf4_with_regional_compile(qco_cache_dir: Path) -> None:
    config = TrialConfig(quantization=(("transformer", "bnb_nf4"),), compile="regional")
    _assert_measured_on_gpu(_trial(config, qco_cache_dir))


def test_torchao_int8wo_with_streamed_leaf_offload(qco_cache_dir: Path) -> None:
    config = TrialConfig(
        quantization=(("transformer", "torchao_int8wo"),), offload="group_leaf", use_stream=True, non_blocking=True
    )
    _assert_measured_on_gpu(_trial(config, qco_cache_dir))
