"""``python -m qco_tune.tools.study_summary`` on a study recorded on an H100.

The storage: ``studies/results/issue2-h100/tiny-gpu-first-visits.db``, committed with those results.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qco_tune.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = ("-m", "qco_tune.tools.study_summary")
RECORDED = REPO / "studies" / "results" / "issue2-h100" / "tiny-gpu-first-visits.db"


def summarize(db: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *SCRIPT, "tiny-gpu", "--storage", f"sqlite:///{db}", "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    copy = tmp_path / "study.db"
    shutil.copyfile(RECORDED, copy)
    return copy


def over_budget(db: Path, number: int) -> None:
    """As if trial ``number`` had gone over the budget: its stored constraint made positive."""
    with sqlite3.connect(db) as conn:
        changed = conn.execute(
            "UPDATE trial_system_attributes SET value_json = '1.0' WHERE key = 'constraints:vram' "
            "AND trial_id = (SELECT trial_id FROM trials WHERE number = ?)",
            (number,),
        ).rowcount
    assert changed == 1


def test_the_summary_holds_recipes_front_speedup_and_memory_model(db: Path, tmp_path: Path) -> None:
    run = summarize(db, tmp_path / "out", "--against", "quantization + group offload")
    assert run.returncode == 0, run.stderr
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["gpu"] == "NVIDIA H100 80GB HBM3" and data["versions"]["torch"] == "2.11.0"
    rows = {r["number"]: r for r in data["trials"]}
    # the four seeded recipes of that study, then the front's searched trial #9
    assert {n: rows[n]["baseline"] for n in (0, 1, 2, 3)} == {
        0: "reference",
        1: "quantization",
        2: "quantization + compile + model offload",
        3: "quantization + group offload",
    }
    assert 9 in data["table"] and rows[9]["category"] == "front" and data["best"] == 9
    best, recipe = rows[9], rows[3]
    assert data["headline"]["against_trial"] == 3 and data["headline"]["against_state"] == "dominated"
    assert data["headline"]["speedup"] == pytest.approx(recipe["latency_s"] / best["latency_s"])
    assert data["headline"]["speedup_per_step"] == pytest.approx(
        recipe["measurement"]["step_time_s"] / best["measurement"]["step_time_s"]
    )
    # strict JSON: the reference against itself is identical, its infinite PSNR null
    assert rows[0]["measurement"]["psnr_db"] is None and rows[0]["measurement"]["identical"] is True
    assert data["trial_counts"] == {"finished": 10, "searched": 6, "searched_failed": 2, "skipped": 1}
    # Every trial that ran is a row once, recipes first: the searched ones dominated or failed too.
    numbers = data["table"]
    assert len(numbers) == len(set(numbers)) == 10 and numbers[:4] == [0, 1, 2, 3]
    assert sum(1 for n in numbers if not rows[n]["baseline"]) == 6
    mm = data["memory_model"]["feasible"]
    assert mm["trials"] == 8 and mm["worst_trial"] == 3 and 0 < mm["median_abs_error"] <= mm["worst_abs_error"]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert f"{data['headline']['speedup']:.2f}× faster than the guide's 'quantization + group offload' (#3)" in md
    assert "| 9 | text_encoder_2:torchao_int8wo, transformer:torchao_int8wo" in md and "over the budget" not in md


def test_a_recipe_over_the_budget_still_gets_its_speedup_said_so(db: Path, tmp_path: Path) -> None:
    over_budget(db, 3)
    run = summarize(db, tmp_path / "out", "--against", "quantization + group offload")
    assert run.returncode == 0, run.stderr
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["headline"]["against_state"] == "infeasible" and data["headline"]["speedup"] > 1
    assert "(the recipe itself is over the budget)" in run.stdout


def test_a_missing_recipe_or_study_is_said_in_one_line(db: Path, tmp_path: Path) -> None:
    run = summarize(db, tmp_path / "out")  # that study seeded no "quantization + compile"
    assert run.returncode == 0 and "'quantization + compile' has no measured latency" in run.stdout
    missing = subprocess.run(
        [sys.executable, *SCRIPT, "nope", "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no study named 'nope'" in missing.stderr


def test_the_record_is_show_json_with_its_own_fields_added(db: Path, tmp_path: Path) -> None:
    run = summarize(db, tmp_path / "out")
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "out" / "summary.json").read_text())
    shown = CliRunner().invoke(cli, ["show", "tiny-gpu", "--json", "--storage", f"sqlite:///{db}"])
    assert shown.exit_code == 0, shown.output
    common = json.loads(shown.output)
    assert {key: record[key] for key in common} == common
    assert set(record) - set(common) == {
        "versions",
        "trial_counts",
        "headline",
        "gpu_seconds",
        "table",
        "compile_first_call_s",
    }


def test_show_gives_the_speedup_over_a_recipe_over_the_budget(db: Path) -> None:
    over_budget(db, 3)
    result = CliRunner().invoke(cli, ["show", "tiny-gpu", "--storage", f"sqlite:///{db}"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "quantization + group offload" in line and "│ 3" in line)
    assert "infeasible" in line and "3.94× (recipe over budget)" in line


H200_PARTIAL = REPO / "tests" / "core" / "data" / "h200-flux-dev-16gib-partial.db"


def test_the_summary_says_what_the_trials_cost_and_how_much_went_to_out_of_memory(tmp_path: Path) -> None:
    copy = tmp_path / "h200.db"
    shutil.copyfile(H200_PARTIAL, copy)
    command = [
        sys.executable,
        *SCRIPT,
        "flux.1-dev-16gib",
        "--storage",
        f"sqlite:///{copy}",
        "--out",
        str(tmp_path),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    data = json.loads((tmp_path / "summary.json").read_text())
    walls = {r["number"]: r["measurement"]["extra"]["wall_s"] for r in data["trials"] if r.get("measurement")}
    walls = {n: w for n, w in walls.items() if w is not None}
    spent = data["gpu_seconds"]
    # Trials 8, 10 and 12 ran out of memory on that H200; #2 (the guide's recipe) was the best.
    assert spent["total"] == pytest.approx(sum(walls.values()))
    assert spent["oom"] == pytest.approx(walls[8] + walls[10] + walls[12])
    assert spent["to_best"] == pytest.approx(walls[1] + walls[2])
    assert spent["interrupted"] == pytest.approx(walls[3] + walls[14])  # the two cut off by SIGINT
    assert spent["to_best_uninterrupted"] == pytest.approx(walls[1] + walls[2])  # both cut off after the best
    assert 0.14 < spent["oom_share"] < 0.17
    assert "15% of it in trials that ran out of memory" in (tmp_path / "summary.md").read_text()
