"""Fixtures of the headless core tests."""

from __future__ import annotations

import pytest

from qco_tune.core.modelref import resolve_model
from qco_tune.core.records import ModelInfo
from qco_tune.core.spec import load_default_spec
from qco_tune.core.studyspec import StudySpec


@pytest.fixture
def default_spec() -> StudySpec:
    return load_default_spec()


@pytest.fixture
def tiny() -> ModelInfo:
    return resolve_model("tiny-flux", "random")


@pytest.fixture
def flux() -> ModelInfo:
    return resolve_model("flux.1-dev", "random")


@pytest.fixture(autouse=True)
def _no_real_hf_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never look at the machine's own Hugging Face cache."""
    home = tmp_path_factory.mktemp("hf-home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
