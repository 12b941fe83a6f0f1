"""``python -m qco_tune.tools.artifact_cold_start``: arguments, requests and record (fake runner)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from fake_machines import H200 as FAKE_H200

from qco_tune.core.records import Capabilities, Measurement, TrialRequest
from qco_tune.tools import artifact_cold_start as tool

# The H200 of the recorded artefacts: their names carry its torch and Triton versions.
H200 = dataclasses.replace(FAKE_H200, versions=(("torch", "2.11.0+cu130"), ("triton", "3.5.0")))


def test_defaults_are_flux_dev_bf16_regional_on_the_gpu(tmp_path: Path) -> None:
    args = tool.parse_args([str(tmp_path / "o.json")])
    request = tool.build_request(args, H200, tmp_path / "a")
    assert args.preset == "flux.1-dev" and request.model.reference == "flux.1-dev"
    assert request.config.compile == "regional" and request.config.quantization == ()
    assert request.device == "cuda" and request.dtype == "bfloat16" and request.workload.steps == 4
    assert request.workload.height == request.workload.width == 1024
    assert request.fresh_compile_cache and request.compile_cache_dir is None  # empty Inductor/Triton caches
    assert request.compile_artifacts_dir == str(tmp_path / "a" / tool.STUDY_FOLDER)
    assert (request.timed_calls, request.max_timed_calls, request.warmup_calls) == (1, 1, 0)
    nf4 = tool.build_request(tool.parse_args(["o.json", "--quantization", "nf4", "--compile", "full"]), H200, tmp_path)
    assert nf4.config.quantization == (("transformer", "bnb_nf4"),) and nf4.config.compile == "full"
    tiny = tool.parse_args(["o.json", "--preset", "tiny-flux", "--steps", "2"])
    cpu = tool.build_request(tiny, Capabilities(), tmp_path)
    assert cpu.device == "cpu" and cpu.dtype == "float32" and cpu.workload.steps == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["o.json", "--preset", "flux.1-def"], "unknown preset"),
        (["o.json", "--steps", "0"], "--steps must be at least 1"),
        (["o.json", "--quantization", "int8"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        tool.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_the_artefact_folder_must_start_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "x").write_text("x")
    with pytest.raises(SystemExit):
        tool.parse_args(["o.json", "--keep-artifacts", str(tmp_path / "old")])
    assert "is not empty" in capsys.readouterr().err


def _fake(first_call: list[float]) -> Any:
    calls: list[TrialRequest] = []

    def execute(request: TrialRequest, timeout: float) -> Measurement:
        calls.append(request)
        warm = len(calls) > 1
        artifacts = {
            "dir": str(Path(request.compile_artifacts_dir or "") / "NVIDIA-H200-torch-2.11.0-triton-3.5.0"),
            "loaded_bytes": 7_837_178 if warm else 0,
            "saved": {"file": "f.qco-artifact", "bytes": 7_837_178, "entries": {"inductor": 40}},
        }
        cache = {"state": "warm" if warm else "cold", "artifacts": artifacts}
        return Measurement(status="ok", first_call_s=first_call[len(calls) - 1], extra={"compile_cache": cache})

    execute.calls = calls  # type: ignore[attr-defined]
    return execute


def test_the_record_of_both_runs(tmp_path: Path) -> None:
    execute = _fake([17.2, 3.8])
    out = tmp_path / "r" / "cold.json"
    assert tool.main([str(out)], execute=execute, caps=H200) == 0
    data = json.loads(out.read_text())
    assert data["cold_first_call_s"] == 17.2 and data["warm_first_call_s"] == 3.8
    assert data["warm_over_cold"] == pytest.approx(3.8 / 17.2) and data["meets_target"] is True
    assert data["artifact_bytes"] == data["loaded_bytes"] == 7_837_178
    assert data["gpu"] == "NVIDIA H200" and data["versions"] == {"torch": "2.11.0+cu130", "triton": "3.5.0"}
    assert data["cold"]["compile_cache"]["state"] == "cold" and data["warm"]["compile_cache"]["state"] == "warm"
    first, second = execute.calls
    assert first == second  # the same trial twice: only what is on disk differs
    assert not Path(first.compile_artifacts_dir).exists()  # a temporary folder, removed


def test_a_failed_cold_run_is_recorded_and_not_repeated(tmp_path: Path) -> None:
    calls: list[TrialRequest] = []

    def execute(request: TrialRequest, timeout: float) -> Measurement:
        calls.append(request)
        return Measurement(status="oom", reason="CUDA out of memory")

    out = tmp_path / "o.json"
    assert tool.main([str(out), "--keep-artifacts", str(tmp_path / "keep")], execute=execute, caps=H200) == 1
    data = json.loads(out.read_text())
    assert len(calls) == 1 and data["cold"]["status"] == "oom" and data["warm_over_cold"] is None
