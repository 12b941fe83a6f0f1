"""Fixtures shared by every test directory. Keep this small: put local fixtures next to their tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def qco_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One qco-tune cache for the whole session, so a preset is materialised once."""
    return tmp_path_factory.mktemp("qco-cache")
