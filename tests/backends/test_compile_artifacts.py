"""Portable compile artefacts in the trial child: loaded before compiling, saved after the first call.

The slow test runs two real trials of the tiny preset's compile on the CPU (torch records Inductor
FX graph and AOT autograd entries there too): the first compiles from scratch in an empty cache and
saves; the second, in another empty cache, loads the first's file and hits instead of compiling.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_helpers import TINY_WORKLOAD

from qco_tune.core.compile_artifacts import ArtifactKey, artifact_files, config_file_name, read_artifact, write_artifact
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import ModelInfo, TrialRequest
from qco_tune.measure.backends.artifacts import current_key, load_artifacts
from qco_tune.measure.runner import run_trial

CONFIG = TrialConfig(compile="full")
"""Whole-denoiser compilation: one graph, the quickest to compile on two CPU cores."""


def _request(model: ModelInfo, study: Path, **kw: object) -> TrialRequest:
    fields: dict[str, object] = {"config": CONFIG, "workload": TINY_WORKLOAD, **kw}
    return TrialRequest(model=model, compile_artifacts_dir=str(study), **fields)  # type: ignore[arg-type]


def test_bad_files_are_not_loaded(tmp_path: Path, tiny_model: ModelInfo) -> None:
    """Another key's file (copied in, or in its own folder) is left alone with a notice; a damaged one is set aside."""
    key = current_key("cpu")
    folder = tmp_path / key.folder
    h100 = ArtifactKey("NVIDIA H100 80GB HBM3", key.torch, key.triton)
    write_artifact(folder / "copied.qco-artifact", b"x" * 100, h100)
    write_artifact(tmp_path / h100.folder / "theirs.qco-artifact", b"y" * 100, h100)
    write_artifact(folder / "cut.qco-artifact", b"z" * 100, key)
    (folder / "cut.qco-artifact").write_bytes((folder / "cut.qco-artifact").read_bytes()[:-7])
    write_artifact(folder / "garbage.qco-artifact", b"not torch's format", key)  # header fine, torch cannot read it
    report = load_artifacts(_request(tiny_model, tmp_path), key)
    assert report is not None and report.loaded == [] and report.loaded_bytes == 0
    notes = "\n".join(report.notices)
    assert len(report.notices) == 4, notes
    assert f"1 compile artefact file(s) of other keys not loaded ({h100.folder})" in notes
    assert "copied.qco-artifact not loaded: made with GPU NVIDIA H100 80GB HBM3 (here cpu)" in notes
    assert "cut.qco-artifact: 93 bytes where the header says 100" in notes
    assert "garbage.qco-artifact: torch could not read it" in notes
    assert sorted(p.name for p in folder.iterdir()) == [
        "copied.qco-artifact",
        "cut.qco-artifact.corrupt",
        "garbage.qco-artifact.corrupt",
    ]
    assert load_artifacts(_request(tiny_model, tmp_path, config=TrialConfig()), key) is None  # nothing compiles


@pytest.mark.slow
def test_a_new_machine_starts_warm_from_the_artefacts(
    tmp_path: Path, tiny_model: ModelInfo, tiny_flux_path: Path, qco_cache_dir: Path
) -> None:
    """Save in one trial, load in the next (each with empty Inductor caches); a corrupt file is rebuilt."""
    study = tmp_path / "qco.compile-artifacts" / "study"
    key = current_key("cpu")
    own = study / key.folder / config_file_name(CONFIG.canonical().key())
    write_artifact(own, b"half a blob", key)
    own.write_bytes(own.read_bytes()[:-3])  # a copy cut short
    foreign = ArtifactKey(key.gpu, "2.10.0", key.triton)
    write_artifact(study / key.folder / "other-torch.qco-artifact", b"q" * 10, foreign)
    request = _request(
        tiny_model,
        study,
        dtype="float32",
        cache_dir=str(qco_cache_dir),
        fresh_compile_cache=True,
        timed_calls=1,
        max_timed_calls=1,
        warmup_calls=0,
    )
    first = run_trial(request, timeout=600)
    assert first.status == "ok", first.reason
    cold = first.extra["compile_cache"]
    saved = cold["artifacts"]["saved"]
    assert cold["state"] == "cold" and cold["fx_graph_misses"] > 0 and cold["artifacts"]["loaded"] == []
    assert any("set aside" in n and own.name in n for n in cold["artifacts"]["notices"])
    assert any("other-torch.qco-artifact not loaded: made with torch 2.10.0" in n for n in cold["artifacts"]["notices"])
    assert saved["file"] == own.name and saved["bytes"] > 10_000 and saved["entries"].get("inductor", 0) > 0
    header, blob = read_artifact(own)  # rebuilt: a whole file in place of the cut one
    assert len(blob) == saved["bytes"] and header["torch"] == key.torch and header["gpu"] == "cpu"
    assert (own.parent / (own.name + ".corrupt")).exists()

    second = run_trial(request, timeout=600)
    assert second.status == "ok", second.reason
    warm = second.extra["compile_cache"]
    assert warm["files_before"] == 0 and warm["state"] == "warm"  # an empty Inductor cache, warmed by the file
    assert warm["artifacts"]["loaded"][0]["file"] == own.name and warm["artifacts"]["loaded_bytes"] == len(blob)
    assert warm["fx_graph_hits"] > 0 and warm["fx_graph_misses"] == 0
    assert warm["artifacts"]["saved"]["file"] == own.name  # what it hit, saved again (unchanged or not)
    assert [p.name for p in artifact_files(own.parent)] == sorted([own.name, "other-torch.qco-artifact"])
    # No timing assertion: on a CPU the artefacts spare Inductor's lowering but not the C++ compiler (torch
    # bundles Triton kernels into the FX graph entries, not C++ ones), so the warm first call is only
    # somewhat shorter here (tiny regional compile: 63 s against 75 s); on a GPU it is most of the cost.
