"""Fused QKV projections with a torchao denoiser on the CPU, with real torch, torchao and diffusers on the tiny
FLUX pipeline: ``qco_tune.from_pretrained`` (the trial's ``load_pipeline`` and ``apply_config``) loads the denoiser
unquantized, fuses, then quantizes it with torchao's ``quantize_`` (huggingface/flux-fast's order).

torchao's float8 dynamic quantization refuses a machine without CUDA compute capability 8.9 and int4 needs CUDA:
``tests/gpu/test_gpu_knobs.py`` runs those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qco_tune
from qco_tune.core.config import TrialConfig
from qco_tune.core.errors import InputError

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

KWARGS = dict(prompt="a cat", height=64, width=64, num_inference_steps=2, max_sequence_length=32, output_type="np")
CPU_BACKENDS = ("torchao_int8wo", "torchao_int8dq", "torchao_fp8wo")


def _image(pipe: Any) -> Any:
    return pipe(**KWARGS, generator=torch.Generator("cpu").manual_seed(0)).images


def _attentions(pipe: Any) -> list[Any]:
    from diffusers.models.attention import AttentionModuleMixin

    return [m for m in pipe.transformer.modules() if isinstance(m, AttentionModuleMixin)]


def _quantized(weight: Any) -> bool:
    from torchao.utils import TorchAOBaseTensor

    return isinstance(weight, TorchAOBaseTensor)


def _config(backend: str, fuse: bool) -> TrialConfig:
    return TrialConfig(quantization=(("transformer", backend),), fuse_qkv=fuse)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_the_fused_projections_are_quantized_and_keep_the_output(
    backend: str, qco_cache_dir: Path, tiny_flux_path: Path
) -> None:
    unfused = qco_tune.from_pretrained("tiny-flux", _config(backend, False), device="cpu", cache_dir=qco_cache_dir)
    fused = qco_tune.from_pretrained("tiny-flux", _config(backend, True), device="cpu", cache_dir=qco_cache_dir)
    assert getattr(fused.transformer, "hf_quantizer", None) is None  # loaded unquantized, quantized after fusing
    attentions = _attentions(fused)
    assert attentions and all(a.fused_projections and _quantized(a.to_qkv.weight) for a in attentions)
    double = [a for a in attentions if getattr(a, "added_kv_proj_dim", None)]
    assert double and all(_quantized(a.to_added_qkv.weight) for a in double)
    # The rest of the denoiser's linear layers too, as at load.
    linears = [m for m in fused.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert all(_quantized(m.weight) for m in linears)
    reference, image = _image(unfused), _image(fused)
    assert np.isfinite(image).all() and image.std() > 0
    # Per-row scales of the concatenated rows are those of the separate projections: the same quantized matmuls.
    assert np.abs(image - reference).max() < 0.05


def test_apply_quantizes_an_unquantized_denoiser_after_fusing(tiny_flux_path: Path) -> None:
    import diffusers

    pipe = diffusers.DiffusionPipeline.from_pretrained(str(tiny_flux_path), dtype=torch.bfloat16)
    qco_tune.apply(pipe, _config("torchao_int8wo", True), device="cpu")
    assert all(_quantized(a.to_qkv.weight) for a in _attentions(pipe))
    assert np.isfinite(_image(pipe)).all()


def test_apply_refuses_a_denoiser_quantized_at_load_when_fusing(qco_cache_dir: Path, tiny_flux_path: Path) -> None:
    pipe = qco_tune.from_pretrained(
        "tiny-flux", _config("torchao_int8wo", False), device="cpu", cache_dir=qco_cache_dir
    )
    with pytest.raises(InputError, match="fuses the QKV projections of 'transformer' and then quantizes it"):
        qco_tune.apply(pipe, _config("torchao_int8wo", True), device="cpu")
