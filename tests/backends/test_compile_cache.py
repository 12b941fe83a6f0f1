"""The study's compilation cache: two trials of one compile configuration share it, the second starts warm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from backend_helpers import TINY_WORKLOAD

from qco_tune.core.config import TrialConfig
from qco_tune.core.paths import compile_cache_dir
from qco_tune.core.records import Capabilities, ModelInfo, TrialRequest
from qco_tune.loop.setup import study_compile_cache
from qco_tune.measure.backends import compile_cache
from qco_tune.measure.runner import run_trial

CPU = Capabilities(cuda=False, versions=(("torch", "2.14.1+cu130"),))


def test_the_cache_is_keyed_by_study_gpu_kind_and_torch_version(tmp_path: Path) -> None:
    h100 = Capabilities(cuda=True, gpu_name="NVIDIA H100 80GB HBM3", versions=(("torch", "2.11.0+cu130"),))
    a = compile_cache_dir("flux-16gib", "NVIDIA H100 80GB HBM3", "2.11.0+cu130", tmp_path)
    assert a.relative_to(tmp_path).parts[0] == "compile" and "H100" in a.name and "2.11.0" in a.name
    assert a != compile_cache_dir("flux-16gib", "NVIDIA H200", "2.11.0+cu130", tmp_path)
    assert a != compile_cache_dir("flux-16gib", "NVIDIA H100 80GB HBM3", "2.12.0", tmp_path)
    assert a != compile_cache_dir("flux 16gib", "NVIDIA H100 80GB HBM3", "2.11.0+cu130", tmp_path)
    os.environ["QCO_CACHE"] = str(tmp_path)
    try:
        assert study_compile_cache("flux-16gib", h100) == a
        assert study_compile_cache("flux-16gib", CPU).name == "cpu-torch-2.14.1-cu130"
    finally:
        del os.environ["QCO_CACHE"]


def _request(model: ModelInfo, **kw: object) -> TrialRequest:
    # Whole-denoiser compilation: one graph, the quickest to compile on two CPU cores (about 30 s cold).
    return TrialRequest(model=model, config=TrialConfig(compile="full"), workload=TINY_WORKLOAD, **kw)  # type: ignore[arg-type]


def test_configure_points_inductor_and_triton_at_the_cache(
    tmp_path: Path, tiny_model: ModelInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (compile_cache.ENV_CACHE_DIR, compile_cache.ENV_TRITON_DIR, *compile_cache.ENV_SWITCHES):
        monkeypatch.delenv(name, raising=False)
    assert compile_cache.configure(_request(tiny_model)) is None  # torch's defaults
    assert compile_cache.ENV_CACHE_DIR not in os.environ
    shared = compile_cache.configure(_request(tiny_model, compile_cache_dir=str(tmp_path / "c")))
    assert shared is not None and shared.state == "cold" and shared.shared
    assert os.environ[compile_cache.ENV_CACHE_DIR] == str(tmp_path / "c" / "inductor")
    assert os.environ[compile_cache.ENV_TRITON_DIR] == str(tmp_path / "c" / "triton")
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    (tmp_path / "c" / "inductor").mkdir()
    (tmp_path / "c" / "inductor" / "graph").write_text("x")
    again = compile_cache.configure(_request(tiny_model, compile_cache_dir=str(tmp_path / "c")))
    assert again is not None and again.state == "warm" and again.files_before == 1
    fresh = compile_cache.configure(_request(tiny_model, fresh_compile_cache=True))
    assert fresh is not None and fresh.state == "cold" and not fresh.shared and fresh.path.is_dir()
    fresh.cleanup()
    assert not fresh.path.exists()
    again.cleanup()  # a shared cache is never removed
    assert (tmp_path / "c" / "inductor" / "graph").exists()


@pytest.mark.slow
def test_a_repeated_compile_configuration_starts_warm(
    tmp_path: Path, tiny_model: ModelInfo, tiny_flux_path: Path, qco_cache_dir: Path
) -> None:
    """Two trials of one compile configuration through the real runner: the second finds the first's artefacts."""
    cache = compile_cache_dir("warm-test", "cpu", "test", tmp_path)
    request = _request(
        tiny_model,
        dtype="float32",
        cache_dir=str(qco_cache_dir),
        compile_cache_dir=str(cache),
        timed_calls=1,
        max_timed_calls=1,
        warmup_calls=0,
    )
    first = run_trial(request, timeout=600)
    assert first.status == "ok", first.reason
    second = run_trial(request, timeout=600)
    assert second.status == "ok", second.reason
    cold, warm = first.extra["compile_cache"], second.extra["compile_cache"]
    assert cold["dir"] == warm["dir"] == str(cache)
    assert cold["state"] == "cold" and cold["files_before"] == 0 and cold["files_after"] > 0
    assert warm["state"] == "warm" and warm["files_before"] == cold["files_after"]
    assert cold["fx_graph_misses"] > 0 and warm["fx_graph_hits"] > 0 and warm["fx_graph_misses"] == 0
    assert first.first_call_s is not None and second.first_call_s is not None
    assert second.first_call_s < first.first_call_s


@pytest.mark.slow
def test_the_gpu_cold_start_script_dry_run(tmp_path: Path, tiny_flux_path: Path, qco_cache_dir: Path) -> None:
    """``python -m qco_tune.tools.gpu_cold_start --tiny``: both runs recorded, repeat warm; a rerun skips."""
    import json
    import subprocess
    import sys

    script = ("-m", "qco_tune.tools.gpu_cold_start")
    out = tmp_path / "out"
    command = [sys.executable, *script, str(out), "--tiny", "--only", "flux-nf4-full", "--recorded", str(tmp_path)]
    env = {**os.environ, "QCO_CACHE": str(qco_cache_dir)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((out / "flux-nf4-full.json").read_text())
    assert data["status"] == "ok" and data["preset"] == "tiny-flux"
    first, repeat = data["first"]["compile_cache"], data["repeat"]["compile_cache"]
    assert first["state"] == "cold" and repeat["state"] == "warm" and first["dir"] == repeat["dir"]
    assert repeat["fx_graph_hits"] > 0 and data["cold_start_speedup"] > 1
    assert data["first_call_s"] == data["first"]["first_call_s"] > data["repeat_first_call_s"]
    assert "| flux-nf4-full |" in (out / "summary.md").read_text()
    assert json.loads((out / "summary.json").read_text())[0]["name"] == "flux-nf4-full"
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "flux-nf4-full: recorded already, skipped" in again.stdout


def test_show_counts_cold_and_warm_starts() -> None:
    from qco_tune.core.records import Measurement
    from qco_tune.loop.summary import compile_cache_starts
    from qco_tune.search.pareto import TrialRow

    def row(number: int, state: str | None, first: float, status: str = "ok") -> TrialRow:
        extra = {"compile_cache": {"state": state, "dir": "/c"}} if state else {}
        m = Measurement(status=status, first_call_s=first, extra=extra)  # type: ignore[arg-type]
        return TrialRow(number, "front", TrialConfig(), m, 1.0, 1, None, None, None)

    rows = (row(0, "cold", 60.0), row(1, "warm", 7.0), row(2, "warm", 9.0), row(3, None, 1.0), row(4, "cold", 5, "oom"))
    assert compile_cache_starts(rows) == {"cold": [60.0], "warm": [7.0, 9.0]}
