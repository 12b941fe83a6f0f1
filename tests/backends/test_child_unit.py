"""Pieces of the trial child that run in-process: call arguments, faults, outcome classification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Measurement, ModelInfo, TrialRequest
from qco_tune.core.studyspec import Workload
from qco_tune.measure.backends import child


class _ImagePipe:
    """Stands in for a pipeline: only its call signature matters to ``call_kwargs``."""

    def __call__(
        self,
        prompt: str,
        height: int,
        width: int,
        num_inference_steps: int,
        generator: Any,
        output_type: str,
        callback_on_step_end: Any,
        guidance_scale: float = 3.5,
    ) -> None: ...


def test_call_kwargs_pass_only_what_the_pipeline_accepts() -> None:
    workload = Workload(negative_prompt="blurry", guidance=4.0, max_sequence_length=64, frames=9, seed=7)
    kwargs = child.call_kwargs(_ImagePipe(), workload, is_video=False, callback=print)
    assert kwargs["guidance_scale"] == 4.0 and kwargs["output_type"] == "np" and kwargs["callback_on_step_end"] is print
    assert "negative_prompt" not in kwargs and "max_sequence_length" not in kwargs and "num_frames" not in kwargs
    assert kwargs["generator"].initial_seed() == 7 and kwargs["generator"].device.type == "cpu"


def test_recorded_call_kwargs_are_what_the_exporter_reads() -> None:
    from qco_tune.loop.export_study import CALL_PARAMETERS_KEY

    assert child.CALL_KWARGS_KEY == CALL_PARAMETERS_KEY
    kwargs = child.call_kwargs(_ImagePipe(), Workload(guidance=4.0, max_sequence_length=64), False, print)
    kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
    assert child.recorded_call_kwargs(kwargs) == ["guidance_scale", "height", "num_inference_steps", "prompt", "width"]


@pytest.mark.parametrize(
    ("fault", "status", "reason"),
    [("oom", "oom", "test fault"), ("error", "error", "RuntimeError: injected test fault")],
)
def test_faults_become_statuses(
    tiny_model: ModelInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, status: str, reason: str
) -> None:
    monkeypatch.setattr("qco_tune.measure.backends.models.load_pipeline", lambda *a, **k: object())
    monkeypatch.setattr("qco_tune.measure.backends.child.materialize", lambda *a, **k: None)
    request = TrialRequest(model=tiny_model, config=TrialConfig(), workload=Workload(), fault=fault)  # type: ignore[arg-type]
    m = child.measure(request, tmp_path / "result.json", None, None)
    assert (m.status, m.reason) == (status, reason)
    assert m.load_s is not None and m.peak_host_bytes is not None and m.latencies_s == ()


def test_oom_raised_outside_the_allocator_is_an_oom(
    tiny_model: ModelInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: object, **__: object) -> None:
        raise RuntimeError("CUDA error: out of memory\nmore detail")

    monkeypatch.setattr("qco_tune.measure.backends.models.load_pipeline", fail)
    monkeypatch.setattr("qco_tune.measure.backends.child.materialize", lambda *a, **k: None)
    request = TrialRequest(model=tiny_model, config=TrialConfig(), workload=Workload())
    m = child.measure(request, tmp_path / "result.json", None, None)
    assert (m.status, m.reason) == ("oom", "CUDA error: out of memory")


def test_unreadable_request_writes_an_error_result(tmp_path: Path) -> None:
    (tmp_path / "request.json").write_text("{not json")
    assert child.main([str(tmp_path / "request.json"), str(tmp_path / "result.json")]) == 0
    m = Measurement.from_dict(json.loads((tmp_path / "result.json").read_text()))
    assert m.status == "error" and m.reason is not None and m.reason.startswith("unreadable trial request")


def test_bad_command_line_exits_2() -> None:
    assert child.main(["only-one"]) == 2


def test_output_array_reads_images_or_frames() -> None:
    class Out:
        images = None
        frames = ([1, 2],)

    assert child.output_array(Out()).tolist() == [[1, 2]]
    assert child.output_array((torch.zeros(2),)).shape == (2,)
