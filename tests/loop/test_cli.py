"""The qco-tune command: fast start without torch, and one-line errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def qco(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qco_tune", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_help_imports_no_torch_or_textual() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from qco_tune.cli.main import cli;"
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output;"
        "bad = [m for m in ('torch', 'diffusers', 'textual', 'optuna') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_list_on_an_empty_storage(tmp_path: Path) -> None:
    result = qco(tmp_path, "list", "--storage", f"sqlite:///{tmp_path}/empty.db")
    assert result.returncode == 0 and "no studies" in result.stdout


def test_show_unknown_study(tmp_path: Path) -> None:
    result = qco(tmp_path, "show", "nope", "--storage", f"sqlite:///{tmp_path}/empty.db")
    assert_one_line_error(result, "no study named 'nope'")


def test_malformed_spec(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('name = "x"\nmodel = "tiny-flux"\nbogus = 3\n')
    assert_one_line_error(qco(tmp_path, "run", str(spec)), "bogus", "line 3")


def test_missing_spec_file(tmp_path: Path) -> None:
    assert_one_line_error(qco(tmp_path, "run", str(tmp_path / "absent.toml")), "absent.toml")


@pytest.mark.parametrize(
    "flag,value", [("--trials", "0"), ("--trials", "-3"), ("--timeout", "0s"), ("--budget", "-1GiB")]
)
def test_non_positive_limits(tmp_path: Path, flag: str, value: str) -> None:
    assert_one_line_error(qco(tmp_path, "run", flag, value))


def test_unknown_preset_suggests_the_closest(tmp_path: Path) -> None:
    assert_one_line_error(qco(tmp_path, "run", "--model", "flux.1-dvv", "--weights", "random"), "flux.1-dev")


def test_hub_id_not_in_the_local_cache(tmp_path: Path) -> None:
    result = qco(
        tmp_path, "run", "--model", "someone/some-model", "--weights", "real", env={"HF_HOME": str(tmp_path / "hf")}
    )
    assert_one_line_error(result, "not in the local Hugging Face cache")


def test_a_revision_of_a_preset_is_refused(tmp_path: Path) -> None:
    result = qco(tmp_path, "run", "--revision", "v2")
    assert result.returncode == 2
    assert_one_line_error(result, "revision 'v2' applies to hub ids only; tiny-flux is a random-weight preset")


def test_unreachable_storage_masks_credentials(tmp_path: Path) -> None:
    result = qco(tmp_path, "list", "--storage", "postgresql+psycopg://u:topsecret@127.0.0.1:1/db")
    assert_one_line_error(result, "***")
    assert "topsecret" not in result.stderr


def test_a_storage_in_a_missing_folder_is_refused_with_the_folder_named(tmp_path: Path) -> None:
    result = qco(tmp_path, "list", "--storage", f"sqlite:///{tmp_path}/nonexistent/dir/x.db")
    assert_one_line_error(result, f"the folder {tmp_path}/nonexistent/dir does not exist")
    assert not (tmp_path / "nonexistent").exists()


def test_a_password_in_the_query_or_a_dsn_is_masked(tmp_path: Path) -> None:
    for url in ("postgresql+psycopg://u@127.0.0.1:1/db?password=topsecret", "host=db password=topsecret"):
        result = qco(tmp_path, "list", "--storage", url)
        assert_one_line_error(result, "***")
        assert "topsecret" not in result.stderr + result.stdout


def test_budget_nothing_fits(tmp_path: Path) -> None:
    result = qco(tmp_path, "run", "--budget", "1MiB", "--storage", f"sqlite:///{tmp_path}/q.db")
    assert_one_line_error(result, "smallest predicted need")


# -- presets, per-model workloads and fidelity -------------------------------------------------------------


def test_presets_lists_sizes_without_torch(tmp_path: Path) -> None:
    result = qco(tmp_path, "presets", env={"QCO_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for fragment in ("flux.1-dev", "11.90 B", "T5EncoderModel", "wan2.1-t2v-14b", "14.29 B", "tiny-wan", "noise"):
        assert fragment in out, fragment


def test_materializing_a_misspelt_preset_suggests_the_closest(tmp_path: Path) -> None:
    assert_one_line_error(qco(tmp_path, "presets", "materialize", "flux-dev"), "did you mean 'flux.1-dev'")


@pytest.mark.slow
def test_presets_materialize_prints_a_folder_plain_diffusers_loads(tmp_path: Path) -> None:
    result = qco(tmp_path, "presets", "materialize", "tiny-wan", env={"QCO_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "cache" / "presets" / "tiny-wan")
    assert "tiny-wan: built in" in result.stderr
    assert (tmp_path / "cache" / "presets" / "tiny-wan" / "model_index.json").is_file()
    again = qco(tmp_path, "presets", "materialize", "tiny-wan", env={"QCO_CACHE": str(tmp_path / "cache")})
    assert again.stdout == result.stdout and "found (it was built earlier in" in again.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--model", "flux.1-dev", "--frames", "33"), "makes images, not videos"),
        (("--model", "wan2.1-t2v-1.3b", "--frames", "32"), "1 + a multiple of 4 frames"),
        (("--model", "flux.1-schnell", "--height", "1000"), "workload.height = 1000 is not a multiple of 16"),
    ],
)
def test_a_workload_the_pipeline_rejects(tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(qco(tmp_path, "run", *args, "--storage", f"sqlite:///{tmp_path}/q.db"), fragment)


def test_too_little_disk_to_materialize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from qco_tune.cli.main import cli
    from qco_tune.core.presets import cache

    usage = type("Usage", (), {"total": 2**40, "used": 2**40 - 2**30, "free": 2**30})
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: usage)
    monkeypatch.setenv("QCO_CACHE", str(tmp_path / "cache"))
    for args in (["presets", "materialize", "wan2.1-t2v-14b"], ["run", "--model", "flux.1-dev"]):
        storage = ["--storage", f"sqlite:///{tmp_path}/q.db"] if args[0] == "run" else []
        result = CliRunner().invoke(cli, [*args, *storage])
        assert result.exit_code == 2, result.output
        assert "needs" in result.output and "only 1.0 GiB is free" in result.output, result.output


def test_show_has_a_fidelity_column(tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    from qco_tune.core.config import TrialConfig
    from qco_tune.core.spec import spec_for_model
    from qco_tune.core.studyspec import spec_to_dict

    url = f"sqlite:///{tmp_path}/q.db"
    study = optuna.create_study(study_name="fid", storage=url, directions=["minimize", "minimize"])
    study.set_user_attr("qco.spec", spec_to_dict(spec_for_model("flux.1-dev")))
    nf4 = TrialConfig(quantization=(("transformer", "bnb_nf4"),))
    for number, (config, psnr, baseline) in enumerate([(TrialConfig(), float("inf"), "reference"), (nf4, 34.5, None)]):
        m = {"status": "ok", "device": "cuda", "latency_s": 5.0 + number, "psnr_db": psnr, "latent_cosine": 0.99931}
        attrs = {"qco.config": config.to_dict(), "qco.measurement": m, "qco.memory_bytes": 2**30}
        if baseline:
            attrs["qco.baseline"] = baseline
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE, values=[5.0 + number, 1.0], user_attrs=attrs, constraints={"vram": -1.0}
            )
        )
    result = qco(tmp_path, "show", "fid", "--storage", url, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "PSNR · cos" in result.stdout and "34.5 dB · 0.99931" in result.stdout and "∞" in result.stdout
    assert "numerical deviation" in result.stdout and "not picture quality" in result.stdout
    as_json = qco(tmp_path, "show", "fid", "--json", "--storage", url)
    assert as_json.returncode == 0, as_json.stderr

    def no_infinity(constant: str) -> None:
        raise AssertionError(f"not plain JSON: {constant}")

    import json

    data = json.loads(as_json.stdout, parse_constant=no_infinity)
    psnr = {t["number"]: t["measurement"]["psnr_db"] for t in data["trials"]}
    assert psnr == {0: "inf", 1: 34.5}


def test_a_failing_database_query_names_the_database_reason(tmp_path: Path) -> None:
    """Optuna words every failed query "An exception is raised during the commit...": the reason shown is the
    database's own, so that a refused connection or a damaged table can be told apart."""
    import sqlite3

    db = tmp_path / "damaged.db"
    assert qco(tmp_path, "list", "--storage", f"sqlite:///{db}").returncode == 0  # Optuna creates its tables
    with sqlite3.connect(db) as connection:
        connection.execute("ALTER TABLE studies RENAME COLUMN study_name TO renamed")
    result = qco(tmp_path, "list", "--storage", f"sqlite:///{db}")
    assert_one_line_error(result, "the storage failed: OperationalError", "study_name")
    assert "exceeding max length" not in result.stderr and result.returncode == 1
