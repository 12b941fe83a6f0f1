"""A qco-tune study as the real clients of its storage see it: optuna-dashboard's HTTP API and the ``optuna`` CLI.

The study is recorded by the real loop (``run_loop``, real storage, SQLite and PostgreSQL) with a FAKE trial
runner (no child, no GPU) whose peaks put some trials over the budget. The dashboard is its own WSGI app,
served on a free port; each finished trial's note holds its exported snippet (``export --dashboard-notes``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from click.testing import CliRunner
from fake_machines import H100_NATIVE_ATTENTION

from qco_tune.cli.main import cli
from qco_tune.core.records import Measurement, TrialRequest
from qco_tune.core.spec import spec_for_model
from qco_tune.loop.context import RunResult, SilentObserver, StudyContext
from qco_tune.loop.setup import load_summary, open_study, prepare
from qco_tune.loop.study import run_loop
from qco_tune.store.storage import open_storage

GIB = 2**30
OPTUNA_CLI = (sys.executable, "-c", "import sys; from optuna.cli import main; sys.exit(main())")
BUDGET = 16 * GIB


def fake_runner(request: TrialRequest, timeout: float, on_phase: object = None) -> Measurement:
    """FAKE figures drawn from the configuration's key: latency 2-10 s, peak 8-24 GiB (a third over 16 GiB)."""
    digest = hashlib.sha256(request.config.key().encode()).digest()
    latency = 2.0 + 8.0 * digest[0] / 255
    peak = int((8.0 + 16.0 * digest[1] / 255) * GIB)
    return Measurement(status="ok", device="cuda", latency_s=latency, step_time_s=latency / 28, peak_device_bytes=peak)


def record_study(url: str, trials: int = 10) -> str:
    spec = dataclasses.replace(spec_for_model("flux.1-dev"), name="dash", vram_budget=BUDGET, trials=trials)
    model, caps, space = prepare(spec, H100_NATIVE_ATTENTION)
    study, _ = open_study(spec, open_storage(url), model, caps, space)
    ctx = StudyContext(spec, model, caps, space, study, SilentObserver(), {}, execute=fake_runner)
    run_loop(ctx, RunResult(spec.name))
    return spec.name


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def dashboard() -> Iterator[Any]:
    """Start optuna-dashboard on a storage URL; yields a function that starts it and returns its base URL."""
    import optuna_dashboard

    servers = []

    def start(url: str) -> str:
        server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(url), handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=60) as response:
        return json.loads(response.read())


def pareto(points: dict[int, tuple[float, float]]) -> set[int]:
    return {
        n
        for n, (a, b) in points.items()
        if not any(x <= a and y <= b and (x, y) != (a, b) for m, (x, y) in points.items() if m != n)
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QCO_CACHE", str(tmp_path / "cache"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'qco.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_dashboard_and_optuna_cli_see_the_feasible_front_of_qco_tune_show(storage_url: str, dashboard: Any) -> None:
    name = record_study(storage_url)
    summary = load_summary(optuna.load_study(study_name=name, storage=storage_url))
    front = {r.number for r in summary.by_category("front")}
    infeasible = {r.number for r in summary.by_category("infeasible")}
    assert front and infeasible, "the fake figures must put trials on both sides of the budget"

    notes = CliRunner().invoke(cli, ["export", name, "--dashboard-notes", "--storage", storage_url])
    assert notes.exit_code == 0, notes.output
    base = dashboard(storage_url)
    (study,) = [s for s in get(base, "/api/studies")["study_summaries"] if s["study_name"] == name]
    detail = get(base, f"/api/studies/{study['study_id']}")
    complete = {t["number"]: t for t in detail["trials"] if t["state"] == "Complete"}
    # The dashboard marks a trial infeasible when one of its constraints is positive (its trial list and plots).
    marked = {n for n, t in complete.items() if any(c > 0 for c in t["constraints"])}
    assert marked == infeasible
    skipped = [t for t in detail["trials"] if t["state"] == "Pruned"]
    assert all(t["constraints"] and t["constraints"][0] > 0 for t in skipped)
    # Its Pareto-front plot: the front of the feasible complete trials, as the dashboard computes it.
    feasible = {n: (t["values"][0], t["values"][1]) for n, t in complete.items() if n not in marked}
    assert pareto(feasible) == front

    best = subprocess.run(
        [*OPTUNA_CLI, "best-trials", "--study-name", name, "--storage", storage_url, "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert best.returncode == 0, best.stderr
    assert {t["number"] for t in json.loads(best.stdout)} == front

    # `optuna trials` shows user attributes, not constraints: qco.feasible says it there.
    listed = subprocess.run(
        [*OPTUNA_CLI, "trials", "--study-name", name, "--storage", storage_url, "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert listed.returncode == 0, listed.stderr
    rows = {t["number"]: t for t in json.loads(listed.stdout) if t["state"] == "COMPLETE"}
    assert {n for n, t in rows.items() if not t["user_attrs"]["qco.feasible"]} == infeasible

    # Each finished trial's note is the snippet `qco-tune export` writes for it.
    for number in sorted(front | infeasible)[:3]:
        snippet = CliRunner().invoke(
            cli, ["export", name, "--trial", str(number), "--allow-failed", "--storage", storage_url]
        )
        assert snippet.exit_code == 0, snippet.output
        assert complete[number]["note"]["body"] == f"```python\n{snippet.stdout}```\n"
