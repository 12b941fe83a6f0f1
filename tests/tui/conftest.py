"""Fixtures of the TUI tests: storages filled by the FAKE BACKEND in fake_study.py (no pipeline runs)."""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_study import FAKE_GPU, fill_fake_study
from tui_helpers import L40S

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in ``tmp_path`` so a relative storage URL (the same text in every snapshot) points there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def two_studies_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Filled once per session (through Optuna, which takes seconds); tests get a copy."""
    path = tmp_path_factory.mktemp("template") / "qco.db"
    url = f"sqlite:///{path}"
    fill_fake_study(url, "flux-dev-16gib", 40, seed=1, gpu=FAKE_GPU, extra_kinds=("failed", "running", "old"))
    fill_fake_study(url, "flux-dev-16gib-l40s", 30, seed=2, gpu=L40S)
    return path


@pytest.fixture
def two_studies(in_tmp: Path, two_studies_template: Path) -> Iterator[str]:
    """``sqlite:///qco.db`` (relative, in the test's folder) with the same fake spec on two fake GPUs.

    Study ``flux-dev-16gib`` also has a failed, a running and an old-format trial (numbers 40-42).
    """
    shutil.copy(two_studies_template, in_tmp / "qco.db")
    yield "sqlite:///qco.db"


@pytest.fixture(params=["from-a-terminal", "in-a-scripts-background"])
def tui_started(request: pytest.FixtureRequest) -> Iterator[str]:
    """How the TUI was started, which its background runs inherit: from a terminal, or with ``&`` in a
    non-interactive shell (a script, many job runners), which leaves SIGINT ignored."""
    previous = signal.getsignal(signal.SIGINT)
    if request.param == "in-a-scripts-background":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield str(request.param)
    finally:
        signal.signal(signal.SIGINT, previous)
