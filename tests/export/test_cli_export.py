"""``qco-tune export``: the best or a chosen trial of a stored study, in every format, and every bad input.

The studies are FAKES filled through Optuna's own API (``export_fakes.add_fake_trial``); nothing runs.
"""

from __future__ import annotations

import ast
import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from export_fakes import FAKE_GPU, add_fake_trial, create_fake_study

from qco_tune.cli.main import cli
from qco_tune.core.config import CONFIG_SCHEMA_VERSION, TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.studyspec import StudySpec, Workload

GIB = 2**30
BEST = TrialConfig(
    quantization=(("transformer", "bnb_nf4"), ("text_encoder_2", "bnb_nf4")),
    compile="full",
    compile_mode="max-autotune",
    fullgraph=True,
)
SLOWER = TrialConfig(quantization=(("transformer", "bnb_nf4"),), offload="model")
OVER = TrialConfig()
FAILED = TrialConfig(offload="group_leaf", use_stream=True)
SKIPPED = TrialConfig(offload="sequential", compile="full")


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A storage holding study ``flux`` with one trial of every kind, and study ``empty`` with only failures.

    Shared by the tests of this module, which only read it (one adds a study of its own).
    """
    import optuna

    url = f"sqlite:///{tmp_path_factory.mktemp('storage')}/fake.db"
    spec = StudySpec(
        name="flux",
        model="flux.1-dev",
        vram_budget=16 * GIB,
        workload=Workload(prompt='a "cat"\nin a pool', height=512, width=512, steps=4, guidance=3.5),
    )
    study = create_fake_study(url, "flux", spec, get_preset("flux.1-dev").model_info())
    add_fake_trial(study, BEST, latency_s=2.0, memory_bytes=10 * GIB, budget_bytes=16 * GIB)  # 0
    add_fake_trial(study, SLOWER, latency_s=3.0, memory_bytes=12 * GIB, budget_bytes=16 * GIB)  # 1
    add_fake_trial(study, OVER, latency_s=1.0, memory_bytes=30 * GIB, budget_bytes=16 * GIB)  # 2
    add_fake_trial(study, FAILED, state="FAIL", status="oom", reason="CUDA out of memory")  # 3
    add_fake_trial(study, SKIPPED, state="PRUNED", status="skipped", reason="invalid: no compile with sequential")  # 4
    newer = {**SLOWER.to_dict(), "version": CONFIG_SCHEMA_VERSION + 1}
    add_fake_trial(study, newer, latency_s=5.0, memory_bytes=12 * GIB, budget_bytes=16 * GIB)  # 5
    empty = create_fake_study(url, "empty", spec, get_preset("flux.1-dev").model_info())
    add_fake_trial(empty, FAILED, state="FAIL", status="error", reason="boom")
    optuna.load_study(study_name="flux", storage=url)  # the storage is readable as written
    return url


def export(storage: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["export", *args, "--storage", storage], catch_exceptions=False)


def one_line_error(result: Result, *fragments: str) -> str:
    assert result.exit_code != 0, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_best_is_the_fastest_feasible_trial(storage: str) -> None:
    result = export(storage, "flux")
    assert result.exit_code == 0, result.stderr
    source = result.stdout
    ast.parse(source)
    head = " ".join(line.removeprefix("# ") for line in source.split("\n\n")[0].splitlines())
    assert "trial 0 (the fastest feasible trial)" in head
    assert "2.000 s per call" in head and "peak VRAM 10.0 GiB" in head and "budget 16.0 GiB" in head
    assert FAKE_GPU in head and "2026-11-24" in head
    assert 'compile(mode="max-autotune", fullgraph=True)' in source
    assert '"black-forest-labs/FLUX.1-dev"' in source  # random weights of a preset: its hub id
    assert result.stderr == ""


def test_a_trial_by_number_and_another_model(storage: str, tmp_path: Path) -> None:
    folder = tmp_path / 'my "flux" copy'
    result = export(storage, "flux", "--trial", "1", "--model", str(folder))
    assert result.exit_code == 0, result.stderr
    assert "trial 1 (chosen by number)" in " ".join(result.stdout.splitlines())
    assert str(folder) in [n.value for n in ast.walk(ast.parse(result.stdout)) if isinstance(n, ast.Constant)]
    assert "enable_model_cpu_offload" in result.stdout


@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_the_configuration_itself(storage: str, fmt: str) -> None:
    result = export(storage, "flux", "--format", fmt)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout) if fmt == "json" else tomllib.loads(result.stdout)
    assert TrialConfig.from_dict(data) == BEST.canonical()


def test_output_file_is_not_overwritten_without_force(storage: str, tmp_path: Path) -> None:
    out = tmp_path / "tuned.py"
    assert export(storage, "flux", "-o", str(out)).exit_code == 0
    first = out.read_text()
    one_line_error(export(storage, "flux", "--trial", "1", "-o", str(out)), "tuned.py exists", "--force")
    assert out.read_text() == first
    assert export(storage, "flux", "--trial", "1", "-o", str(out), "--force").exit_code == 0
    assert out.read_text() != first


@pytest.mark.parametrize(
    ("number", "fragment"),
    [("2", "over the budget"), ("3", "failed (oom: CUDA out of memory)"), ("4", "never ran")],
)
def test_failed_infeasible_and_skipped_trials_need_a_flag(storage: str, number: str, fragment: str) -> None:
    one_line_error(export(storage, "flux", "--trial", number), fragment, "--allow-failed")
    result = export(storage, "flux", "--trial", number, "--allow-failed")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("warning:") and fragment in result.stderr
    comments = " ".join(line for line in result.stdout.splitlines() if line.startswith("#"))
    assert "WARNING:" in comments and fragment.split(" (")[0] in comments
    ast.parse(result.stdout)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["nope"], ["no study named 'nope'"]),
        (["flux", "--trial", "42"], ["no trial 42", "trials 0-5"]),
        (["flux", "--trial", "fastest"], ["--trial must be 'best' or a trial number"]),
        (["flux", "--trial", "-1"], ["--trial must be"]),
        (["flux", "--trial", "5"], ["trial 5", "newer than this qco-tune"]),
        (["flux", "--format", "yaml"], ["unknown format 'yaml'"]),
        (["empty"], ["no feasible trial", "--trial N"]),
    ],
)
def test_bad_input_is_one_line(storage: str, args: list[str], fragments: list[str]) -> None:
    one_line_error(export(storage, *args), *fragments)


def test_a_study_not_made_by_qco_tune(storage: str) -> None:
    import optuna

    study = optuna.create_study(study_name="foreign", storage=storage)
    study.add_trial(optuna.trial.create_trial(value=1.0))
    one_line_error(export(storage, "foreign"), "stores no spec")


def test_export_is_listed_in_help() -> None:
    result = CliRunner().invoke(cli, ["export", "--help"])
    assert result.exit_code == 0
    for option in ("--trial", "--model", "--format", "--output", "--force", "--allow-failed"):
        assert option in result.output


def test_compile_artifacts_are_loaded_before_compiling_on_request(storage: str) -> None:
    folder = "/srv/qco.compile-artifacts/flux-1234"
    result = export(storage, "flux", "--compile-artifacts", folder)
    assert result.exit_code == 0 and result.stderr == "", result.stderr
    source = result.stdout
    assert folder in [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)]
    assert source.index("torch.compiler.load_cache_artifacts(blob)") < source.index(".compile(")
    assert "import json" in source and "from pathlib import Path" in source
    assert "load_cache_artifacts" not in export(storage, "flux").stdout  # opt-in
    uncompiled = export(storage, "flux", "--trial", "1", "--compile-artifacts", folder)
    assert uncompiled.exit_code == 0 and "load_cache_artifacts" not in uncompiled.stdout
    assert "--compile-artifacts ignored: the trial does not compile" in uncompiled.stderr
