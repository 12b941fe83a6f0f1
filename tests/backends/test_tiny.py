"""The tiny-flux preset: built locally, materialised once, reloaded through the real from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qco_tune.core.records import ModelInfo
from qco_tune.measure.backends import tiny

pytestmark = pytest.mark.slow  # builds and runs torch models (a few seconds)


def test_materialised_preset_is_complete_and_reused(tiny_flux_path: Path, qco_cache_dir: Path) -> None:
    assert tiny_flux_path == qco_cache_dir / "presets" / "tiny-flux"
    marker = json.loads((tiny_flux_path / tiny.MARKER).read_text())
    assert marker["builder_version"] == tiny.BUILDER_VERSION
    assert set(marker["components"]) == {"transformer", "text_encoder", "text_encoder_2", "vae"}
    assert list((tiny_flux_path / "transformer").glob("*.safetensors"))
    before = (tiny_flux_path / "model_index.json").stat().st_mtime_ns
    assert tiny.materialize_preset("tiny-flux", qco_cache_dir) == tiny_flux_path
    assert (tiny_flux_path / "model_index.json").stat().st_mtime_ns == before  # not rebuilt
    # No temporary build folders are left behind.
    assert not [p.name for p in (qco_cache_dir / "presets").iterdir() if p.name.startswith(".")]


def test_incomplete_folder_is_rebuilt(tmp_path: Path) -> None:
    broken = tmp_path / "presets" / "tiny-flux"
    broken.mkdir(parents=True)
    (broken / "model_index.json").write_text("{}")  # a build interrupted before the marker
    path = tiny.materialize_preset("tiny-flux", tmp_path)
    assert path == broken and (path / tiny.MARKER).exists()
    assert (path / "transformer" / "config.json").exists()


def test_unknown_preset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        tiny.materialize_preset("nope", tmp_path)


def test_reloads_offline_and_generates(tiny_flux_path: Path) -> None:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_flux_path, dtype=torch.float32, local_files_only=True)
    assert type(pipe).__name__ == "FluxPipeline"
    assert pipe.tokenizer.model_max_length == tiny.CLIP_MAX_LENGTH
    ids = pipe.tokenizer("A photo of an astronaut").input_ids
    assert ids[0] == pipe.text_encoder.config.bos_token_id and ids[-1] == pipe.text_encoder.config.eos_token_id
    assert pipe.tokenizer_2("a photo").input_ids[-1] == pipe.text_encoder_2.config.eos_token_id
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "a photo of an astronaut riding a horse on the moon",
        height=64,
        width=64,
        num_inference_steps=2,
        max_sequence_length=32,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (1, 64, 64, 3)
    assert np.isfinite(out).all() and out.std() > 0


def test_parameter_counts_match_the_preset_metadata(tiny_flux_path: Path, tiny_model: ModelInfo) -> None:
    counts = json.loads((tiny_flux_path / tiny.MARKER).read_text())["components"]
    for component in tiny_model.components:
        assert counts[component.name]["class"] == component.class_name
