"""The trial child end to end on the CPU, as the runner starts it: a subprocess writing a Measurement.

The children run concurrently (module fixture): each spends most of its time importing torch.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
from backend_helpers import TINY_WORKLOAD, ChildProcess, ChildRun

from qco_tune.core.config import FaultKind, TrialConfig
from qco_tune.core.records import ModelInfo, TrialRequest

pytestmark = pytest.mark.slow

FAULTS: dict[str, FaultKind | None] = {"ok": None, "error": "error", "abort": "abort"}


@pytest.fixture(scope="module")
def runs(
    tiny_model: ModelInfo, qco_cache_dir: Path, tiny_flux_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ChildRun]:
    """One CPU trial of the tiny preset (materialised already) per fault, all started at once."""

    def request(fault: FaultKind | None) -> TrialRequest:
        return TrialRequest(
            model=tiny_model,
            config=TrialConfig(quantization=(("transformer", "torchao_int8wo"),)),
            workload=TINY_WORKLOAD,
            dtype="float32",
            device="cpu",
            timed_calls=3,
            max_timed_calls=4,
            warmup_calls=1,
            cache_dir=str(qco_cache_dir),
            fault=fault,
        )

    started = {name: ChildProcess(request(fault), tmp_path_factory.mktemp(name)) for name, fault in FAULTS.items()}
    return {name: child.finish() for name, child in started.items()}


def test_trial_measures_on_cpu(runs: dict[str, ChildRun]) -> None:
    proc, m = runs["ok"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert m is not None and m.status == "ok", m
    assert m.device == "cpu"
    assert 3 <= len(m.latencies_s) <= 4 and all(t > 0 for t in m.latencies_s)
    assert m.latency_s is not None and min(m.latencies_s) <= m.latency_s <= max(m.latencies_s)
    assert m.latency_spread_s is not None and m.latency_spread_s >= 0
    assert m.step_time_s is not None and 0 < m.step_time_s < m.latency_s
    assert m.load_s is not None and m.load_s > 0 and m.first_call_s is not None and m.first_call_s > 0
    assert m.peak_host_bytes is not None and m.peak_host_bytes > 100 * 2**20  # torch alone is bigger
    assert m.peak_device_bytes is None and m.peak_allocated_bytes is None and m.peak_reserved_bytes is None
    assert len(m.extra["warmup_s"]) == 1
    assert m.extra["call_kwargs"] == [
        "guidance_scale",
        "height",
        "max_sequence_length",
        "num_inference_steps",
        "prompt",
        "width",
    ]


def test_trial_reports_phases(runs: dict[str, ChildRun]) -> None:
    proc, _ = runs["ok"]
    phases = [line.removeprefix("QCO-PHASE ") for line in proc.stdout.splitlines() if line.startswith("QCO-PHASE ")]
    assert phases[:5] == ["import", "load", "apply", "first-call", "warmup"]
    assert phases[5:8] == ["timed 1/3", "timed 2/3", "timed 3/3"]
    assert phases[8:-1] in ([], ["timed 4/4"]) and phases[-1] == "done"


def test_trial_saves_its_output(runs: dict[str, ChildRun]) -> None:
    _, m = runs["ok"]
    assert m is not None
    output = np.load(m.extra["output_path"])
    assert output.shape == (1, 64, 64, 3) and tuple(m.extra["output_shape"]) == output.shape
    assert np.isfinite(output).all()


def test_injected_error_is_reported(runs: dict[str, ChildRun]) -> None:
    proc, m = runs["error"]
    assert proc.returncode == 0
    assert m is not None and m.status == "error"
    assert m.reason == "RuntimeError: injected test fault"
    assert m.output_tail is not None and "Traceback" in m.output_tail and "inject_fault" in m.output_tail
    assert m.load_s is not None and m.peak_host_bytes is not None  # what was measured before the failure stays


def test_abort_leaves_no_result(runs: dict[str, ChildRun]) -> None:
    proc, m = runs["abort"]
    assert proc.returncode == -signal.SIGABRT
    assert m is None
