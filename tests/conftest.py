"""Fixtures shared by every test directory. Keep this small: put local fixtures next to their tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def qco_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One qco-tune cache for the whole session, so a preset is materialised once."""
    return tmp_path_factory.mktemp("qco-cache")


@pytest.fixture(autouse=True)
def private_cache_and_temp(
    qco_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """No test writes into the user's cache or leaves files in the system's temporary folder.

    ``QCO_CACHE`` (presets, compile caches, reference outputs) is the session's own cache, and
    ``TMPDIR`` (the runner's ``qco-trial-*`` folders, the TUI's ``qco-run-*.log``) a folder of the test's
    own, for this process and every child it starts; pytest removes both with its old temporary folders.
    A test that needs its own cache sets ``QCO_CACHE`` again.
    """
    temp = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setenv("QCO_CACHE", str(qco_cache_dir))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    yield temp


@pytest.fixture(autouse=True)
def inductor_config_restored() -> Iterator[None]:
    """Each test finds ``torch._inductor.config`` as the one before found it.

    It is global to the process: an Inductor profile sets it, and so does torchao as a side effect of
    quantizing (``coordinate_descent_tuning``, ``force_fuse_int_mm_with_mul``). Tests that record what a
    configuration changes there (``tests/export``) would otherwise depend on the order tests run in.
    Trials are immune: each runs in a fresh process.
    """
    import sys

    saved = None
    if "torch" in sys.modules:
        import torch._inductor.config

        saved = torch._inductor.config.get_config_copy()
    yield
    if saved is not None:
        torch._inductor.config.load_config(saved)
