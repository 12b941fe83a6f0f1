"""The study's compilation cache: two trials of one compile configuration share it, the second starts warm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from backend_helpers import TINY_WORKLOAD

from qco_tune.backends import compile_cache
from qco_tune.config import Capabilities, ModelInfo, TrialConfig, TrialRequest
from qco_tune.paths import compile_cache_dir
from qco_tune.runner import run_trial
from qco_tune.study import study_compile_cache

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
    return TrialRequest(model=model, config=TrialConfig(compile="regional"), workload=TINY_WORKLOAD, **kw)  # type: ignore[arg-type]


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
