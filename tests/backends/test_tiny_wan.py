"""The tiny-wan preset: a Wan2.1-shaped video pipeline, materialised once and reloaded through from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qco_tune.core.presets import get_preset
from qco_tune.core.presets.cache import MARKER
from qco_tune.measure.backends.materialize import materialize_preset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_wan_path(qco_cache_dir: Path) -> Path:
    return materialize_preset("tiny-wan", qco_cache_dir).path


def test_materialised_with_its_build_time_and_reused(tiny_wan_path: Path, qco_cache_dir: Path) -> None:
    marker = json.loads((tiny_wan_path / MARKER).read_text())
    assert marker["preset"] == "tiny-wan" and marker["device"] == "cpu" and marker["seconds"] > 0
    assert {k: v["params"] for k, v in marker["components"].items()} == dict(get_preset("tiny-wan").params)
    again = materialize_preset("tiny-wan", qco_cache_dir)
    assert again.path == tiny_wan_path and not again.built and again.seconds == marker["seconds"]


def test_reloads_offline_and_makes_a_video(tiny_wan_path: Path) -> None:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_wan_path, dtype=torch.bfloat16, local_files_only=True)
    assert type(pipe).__name__ == "WanPipeline" and pipe.transformer_2 is None
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler" and pipe.scheduler.config.use_flow_sigmas
    assert pipe.tokenizer("a cat").input_ids[-1] == pipe.text_encoder.config.eos_token_id
    pipe.set_progress_bar_config(disable=True)
    w = get_preset("tiny-wan").workload
    frames = pipe(
        w.prompt,
        height=w.height,
        width=w.width,
        num_frames=w.frames,
        num_inference_steps=w.steps,
        guidance_scale=w.guidance,
        max_sequence_length=w.max_sequence_length,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames
    assert frames.shape == (1, 5, 32, 32, 3)
    assert np.isfinite(frames).all() and frames.std() > 0
