"""The grid recorder's dry run (``--tiny``): real trials of the tiny preset, resumed across commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qco_tune.bench.grid import load_grid
from qco_tune.cli.main import cli

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SCRIPT = ("-m", "qco_tune.tools.record_grid")


def record(out: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QCO_CACHE": str(cache)}
    command = [sys.executable, *SCRIPT, str(out), "--tiny", "--resume", str(out.parent / "none.jsonl"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)


def test_a_tiny_grid_is_recorded_resumed_and_replayed(tmp_path: Path, qco_cache_dir: Path) -> None:
    out = tmp_path / "grid.jsonl"
    first = record(out, qco_cache_dir, "--limit", "1", "--budget-s", "400")
    assert first.returncode == 0, first.stderr + first.stdout
    assert "0 recorded" in first.stdout and "--limit 1 reached" in first.stdout
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["format"] == "qco-grid"
    row = json.loads(lines[1])
    assert row["status"] == "ok" and row["configuration"] == "bf16"
    assert row["latency_s"] > 0 and row["memory_bytes"] > 0 and row["first_call_s"] > 0
    assert row["trial_s"] >= row["first_call_s"] and row["fingerprint"]["versions"]

    again = record(out, qco_cache_dir, "--limit", "1", "--budget-s", "400")
    assert again.returncode == 0, again.stderr + again.stdout
    assert "1 recorded" in again.stdout and "\nbf16 (" not in again.stdout  # the recorded one is not run again
    grid = load_grid(out)
    assert len(grid.records) == 2 and grid.total_seconds > 0

    short = record(out, qco_cache_dir, "--budget-s", "1")
    assert short.returncode == 0 and "stopping before" in short.stdout, short.stderr + short.stdout
    assert len(load_grid(out).records) == 2

    replay = CliRunner().invoke(cli, ["bench", "search", "--grid", str(out), "--seeds", "1", "--json"])
    assert replay.exit_code == 0, replay.output
    data = json.loads(replay.stdout)
    assert data["grid_gpu_seconds"] == pytest.approx(grid.total_seconds, abs=1e-3)
    assert set(data["samplers"]) == {"random", "optuna_default", "qco_tpe", "qco"}


def test_a_grid_is_shared_out_over_several_gpus_and_merged(tmp_path: Path, qco_cache_dir: Path) -> None:
    """``--gpus 2`` on the CPU: two recorders, one configuration each, merged into OUT."""
    out = tmp_path / "grid.jsonl"
    run = record(out, qco_cache_dir, "--gpus", "2", "--limit", "1", "--budget-s", "400")
    assert run.returncode == 0, run.stderr + run.stdout
    assert "[gpu0] share 0 of 2" in run.stdout and "[gpu1] share 1 of 2" in run.stdout
    grid = load_grid(out)
    assert len(grid.records) == 2  # one per GPU, by configuration key
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("grid")) == ["grid.jsonl"]
    assert "6 configuration(s) left" in run.stdout  # of the tiny grid's 8, counted in the merged file
