"""Fixtures of the export tests: models and the materialised tiny pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from qco_tune.core.presets import get_preset
from qco_tune.core.records import ModelInfo


@pytest.fixture(scope="session")
def flux() -> ModelInfo:
    return get_preset("flux.1-dev").model_info()


@pytest.fixture(scope="session")
def wan() -> ModelInfo:
    return get_preset("wan2.1-t2v-14b").model_info()


@pytest.fixture(scope="session")
def tiny() -> ModelInfo:
    return get_preset("tiny-flux").model_info()


@pytest.fixture(scope="session")
def tiny_folder(qco_cache_dir: Path) -> Path:
    """The tiny random-weight FluxPipeline saved as a diffusers folder, in the session's shared qco-tune cache."""
    pytest.importorskip("diffusers")
    from qco_tune.measure.backends.tiny import materialize_preset

    return materialize_preset("tiny-flux", qco_cache_dir)
