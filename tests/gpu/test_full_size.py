"""Full-size presets on a CUDA GPU, lightly (skipped without one; python -m qco_tune.tools.gpu_full_size records runs).

- FLUX.1-dev's and Wan2.1's transformers at their real width with two blocks, at the real token
  counts (1024x1024 with 512 text tokens; 480x832x33 frames), built on the GPU in bf16;
- the T5-XXL encoder built on the GPU in bf16 in seconds (the fast path materialisation uses);
- the tiny Wan preset through the real runner on the GPU: reference, then bitsandbytes NF4 with
  group offloading, fidelity included.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.presets.blueprint import ModelPart
from qco_tune.core.records import TrialRequest
from qco_tune.measure.backends.presets_build import build_model
from qco_tune.measure.runner import run_trial

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DESIGN_S_PER_BLOCK = 0.184 / 57
"""DESIGN.md: FLUX.1-dev's transformer, bf16 eager, 1024x1024: 0.184 s per step over 57 blocks."""


def _shallow(part: ModelPart, **depth: int) -> ModelPart:
    return dataclasses.replace(part, config={**part.config, **depth})


def _timed(fn: Any, repeats: int = 5) -> float:
    fn()  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


@torch.no_grad()
def test_flux_transformer_at_real_width_with_two_blocks() -> None:
    part = _shallow(get_preset("flux.1-dev").blueprint.model("transformer"), num_layers=1, num_single_layers=1)
    model = build_model(part, "cuda", "bfloat16")
    assert model.inner_dim == 3072 and next(model.parameters()).dtype == torch.bfloat16
    image, text = (1024 // 16) ** 2, 512  # 64 x 64 tokens of 2x2 packed latents, T5 tokens
    kwargs = {
        "hidden_states": torch.randn(1, image, 64, device="cuda", dtype=torch.bfloat16),
        "encoder_hidden_states": torch.randn(1, text, 4096, device="cuda", dtype=torch.bfloat16),
        "pooled_projections": torch.randn(1, 768, device="cuda", dtype=torch.bfloat16),
        "timestep": torch.tensor([0.5], device="cuda", dtype=torch.bfloat16),
        "guidance": torch.tensor([3.5], device="cuda", dtype=torch.bfloat16),
        "img_ids": torch.zeros(image, 3, device="cuda", dtype=torch.bfloat16),
        "txt_ids": torch.zeros(text, 3, device="cuda", dtype=torch.bfloat16),
    }
    out = model(**kwargs, return_dict=False)[0]
    assert out.shape == (1, image, 64) and torch.isfinite(out).all()
    seconds = _timed(lambda: model(**kwargs, return_dict=False))
    print(f"FLUX.1-dev transformer, 2 of 57 blocks at 1024x1024: {seconds * 1000:.1f} ms per forward")
    assert seconds < 20 * 2 * DESIGN_S_PER_BLOCK  # two blocks plus embedders, far from a slow path


@torch.no_grad()
def test_wan_transformer_at_real_width_with_two_blocks() -> None:
    part = _shallow(get_preset("wan2.1-t2v-1.3b").blueprint.model("transformer"), num_layers=2)
    model = build_model(part, "cuda", "bfloat16")
    latents = torch.randn(1, 16, (33 - 1) // 4 + 1, 480 // 8, 832 // 8, device="cuda", dtype=torch.bfloat16)
    text = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
    timestep = torch.tensor([500], device="cuda")
    out = model(latents, timestep, text, return_dict=False)[0]
    assert out.shape == latents.shape and torch.isfinite(out).all()
    seconds = _timed(lambda: model(latents, timestep, text, return_dict=False), repeats=3)
    print(f"Wan2.1-1.3B transformer, 2 of 30 blocks, 480x832x33 frames (14040 tokens): {seconds * 1000:.1f} ms")


def test_the_t5_xxl_encoder_builds_on_the_gpu_in_bf16_in_seconds() -> None:
    torch.cuda.synchronize()
    start = time.perf_counter()
    t5 = build_model(get_preset("flux.1-dev").blueprint.model("text_encoder_2"), "cuda", "bfloat16")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    first = next(t5.parameters())
    assert first.device.type == "cuda" and first.dtype == torch.bfloat16
    assert sum(p.numel() for p in t5.parameters()) == dict(get_preset("flux.1-dev").params)["text_encoder_2"]
    print(f"T5-XXL encoder (4.76 B) built on the GPU in {seconds:.1f} s")
    assert seconds < 30
    with torch.no_grad():
        ids = torch.randint(0, 32128, (1, 512), device="cuda")
        assert torch.isfinite(t5(ids).last_hidden_state).all()  # random weights stay finite in bf16
    del t5
    torch.cuda.empty_cache()


def test_tiny_wan_reference_then_nf4_with_group_offload(tmp_path: Path, qco_cache_dir: Path) -> None:
    preset = get_preset("tiny-wan")

    def trial(config: TrialConfig, save: bool) -> Any:
        request = TrialRequest(
            model=preset.model_info(),
            config=config,
            workload=dataclasses.replace(preset.workload, height=64, width=64, frames=9),
            dtype="bfloat16",
            device="cuda",
            timed_calls=2,
            max_timed_calls=3,
            warmup_calls=1,
            cache_dir=str(qco_cache_dir),
            reference_dir=str(tmp_path / "reference"),
            save_reference=save,
        )
        m = run_trial(request, timeout=600)
        assert m.status == "ok", (m.reason, m.output_tail)
        return m

    ref = trial(TrialConfig(), True)
    assert ref.psnr_db == math.inf and ref.extra["output_shape"] == [1, 9, 64, 64, 3]
    nf4 = trial(
        TrialConfig(
            quantization=(("transformer", "bnb_nf4"), ("text_encoder", "bnb_nf4")),
            offload="group_leaf",
            use_stream=True,
            non_blocking=True,
        ),
        False,
    )
    assert nf4.psnr_db is not None and math.isfinite(nf4.psnr_db) and nf4.latent_cosine is not None
    assert nf4.peak_device_bytes is not None and nf4.peak_allocated_bytes is not None
