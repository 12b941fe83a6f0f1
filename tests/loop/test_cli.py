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
        "import sys; from click.testing import CliRunner; from qco_tune.cli import cli;"
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


def test_unreachable_storage_masks_credentials(tmp_path: Path) -> None:
    result = qco(tmp_path, "list", "--storage", "postgresql+psycopg://u:topsecret@127.0.0.1:1/db")
    assert_one_line_error(result, "***")
    assert "topsecret" not in result.stderr


def test_budget_nothing_fits(tmp_path: Path) -> None:
    result = qco(tmp_path, "run", "--budget", "1MiB", "--storage", f"sqlite:///{tmp_path}/q.db")
    assert_one_line_error(result, "smallest predicted need")
