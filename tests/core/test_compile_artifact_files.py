"""The portable compile artefacts' files and folders (stdlib only: no torch, no trial)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qco_tune.core.compile_artifacts import (
    ArtifactError,
    ArtifactKey,
    artifact_files,
    artifacts_root,
    config_file_name,
    read_artifact,
    read_header,
    set_aside,
    study_artifacts_dir,
    write_artifact,
)
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Capabilities, TrialRequest
from qco_tune.core.studyspec import StudySpec, Workload

H200 = ArtifactKey("NVIDIA H200", "2.11.0+cu130", "3.5.0")


def test_the_folder_lies_beside_a_sqlite_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert artifacts_root("sqlite:///studies/qco.db") == tmp_path / "studies" / "qco.compile-artifacts"
    assert artifacts_root(f"sqlite:///{tmp_path}/s/flux.db") == tmp_path / "s" / "flux.compile-artifacts"
    assert artifacts_root("sqlite:///:memory:") == tmp_path / "cache" / "compile-artifacts"
    assert artifacts_root("postgresql+psycopg://u:p@db/qco") == tmp_path / "cache" / "compile-artifacts"
    assert artifacts_root("postgresql://db/qco", tmp_path / "shared") == tmp_path / "shared"
    assert artifacts_root(f"sqlite:///{tmp_path}/a.db", "~/x") == Path("~/x").expanduser()
    one, two = study_artifacts_dir(tmp_path, "flux 16gib"), study_artifacts_dir(tmp_path, "flux-16gib")
    assert one.parent == tmp_path and one.name.startswith("flux-16gib-") and one != two


def test_the_key_folder_and_file_names() -> None:
    assert H200.folder == "NVIDIA-H200-torch-2.11.0-cu130-triton-3.5.0"
    assert ArtifactKey("cpu", "2.14.1", "none").folder == "cpu-torch-2.14.1-triton-none"
    name = config_file_name(TrialConfig(compile="regional").key())
    assert name.endswith(".qco-artifact") and name != config_file_name(TrialConfig(compile="full").key())
    assert H200.mismatch(H200) is None
    other = ArtifactKey("NVIDIA H100 80GB HBM3", "2.11.0+cu130", "3.4.0")
    assert H200.mismatch(other) == "GPU NVIDIA H100 80GB HBM3 (here NVIDIA H200), Triton 3.4.0 (here 3.5.0)"


def test_a_file_round_trips_with_its_key_and_checksum(tmp_path: Path) -> None:
    path = tmp_path / "k" / "a.qco-artifact"
    blob = bytes(range(256)) * 100 + b"\n\nnewlines inside"
    size = write_artifact(path, blob, H200, config="bf16 · compile regional/default", trial=3)
    assert path.stat().st_size == size and [p.name for p in path.parent.iterdir()] == ["a.qco-artifact"]
    header, back = read_artifact(path)
    assert back == blob and header["bytes"] == len(blob) and header["trial"] == 3
    assert header["gpu"] == "NVIDIA H200" and header["torch"] == "2.11.0+cu130" and header["triton"] == "3.5.0"
    assert read_header(path) == header
    assert artifact_files(path.parent) == [path]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-10], "cut short"),
        (lambda data: data + b"x", "where the header says"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "sha256"),
        (lambda data: b"PK\x03\x04 something else\n" + data, "no header"),
        (lambda data: data[:30], "no header"),
        (lambda data: b"", "no header"),
    ],
    ids=["truncated", "too-long", "altered", "foreign", "half-header", "empty"],
)
def test_a_damaged_file_is_refused(tmp_path: Path, damage: object, message: str) -> None:
    path = tmp_path / "a.qco-artifact"
    write_artifact(path, b"blob" * 1000, H200)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(ArtifactError, match=message):
        read_artifact(path)


def test_temporary_and_set_aside_files_are_not_listed(tmp_path: Path) -> None:
    write_artifact(tmp_path / "a.qco-artifact", b"1", H200)
    (tmp_path / ".b.qco-artifact.123.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("x")
    write_artifact(tmp_path / "c.qco-artifact", b"2", H200)
    moved = set_aside(tmp_path / "c.qco-artifact")
    assert moved.name == "c.qco-artifact.corrupt"
    assert [p.name for p in artifact_files(tmp_path)] == ["a.qco-artifact"]
    assert artifact_files(tmp_path / "missing") == []


def test_an_old_request_without_the_field_still_reads() -> None:
    from qco_tune.core.presets import get_preset

    model = get_preset("tiny-flux").model_info()
    request = TrialRequest(model=model, config=TrialConfig(), workload=Workload())
    data = request.to_dict()
    assert data["compile_artifacts_dir"] is None
    del data["compile_artifacts_dir"]
    assert TrialRequest.from_dict(json.loads(json.dumps(data))) == request


def test_the_study_passes_its_folder_to_compiling_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from qco_tune.core.presets import get_preset
    from qco_tune.loop import trial as study_module

    monkeypatch.setenv("QCO_CACHE", str(tmp_path / "cache"))
    spec = StudySpec(name="flux", model="tiny-flux")
    model = get_preset("tiny-flux").model_info()
    ctx = study_module.StudyContext(spec, model, Capabilities(), None, None, None, {})  # type: ignore[arg-type]
    assert study_module.trial_request(ctx, TrialConfig(compile="full"), 0).compile_artifacts_dir is None  # a replay
    ctx.compile_artifacts = artifacts_root(f"sqlite:///{tmp_path}/qco.db")
    request = study_module.trial_request(ctx, TrialConfig(compile="full"), 0)
    assert request.compile_artifacts_dir == str(study_artifacts_dir(tmp_path / "qco.compile-artifacts", "flux"))
    ctx.spec = dataclasses.replace(spec, compile_cache=False)  # cold compiles asked for: no artefacts either
    assert study_module.trial_request(ctx, TrialConfig(compile="full"), 0).compile_artifacts_dir is None
