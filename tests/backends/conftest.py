"""Fixtures of the backend tests: the tiny preset, materialised once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from qco_tune.core.presets import get_preset
from qco_tune.core.records import ModelInfo


@pytest.fixture(scope="session")
def tiny_model() -> ModelInfo:
    return get_preset("tiny-flux").model_info()


@pytest.fixture(scope="session")
def tiny_flux_path(qco_cache_dir: Path) -> Path:
    from qco_tune.measure.backends.tiny import materialize_preset

    return materialize_preset("tiny-flux", qco_cache_dir)
