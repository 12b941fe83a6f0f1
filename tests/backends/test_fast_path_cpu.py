"""The fast-path knobs on the CPU with real torch: what ``qco_tune.apply`` (the trial's ``apply_config``) does to
the tiny FLUX pipeline, and the traits read from the installed diffusers' classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qco_tune
from qco_tune.calls.dynamo import INDUCTOR_PROFILES

torch = pytest.importorskip("torch")

KWARGS = dict(prompt="a cat", height=64, width=64, num_inference_steps=2, max_sequence_length=32, output_type="np")


def _load(path: Path) -> Any:
    import diffusers

    return diffusers.DiffusionPipeline.from_pretrained(str(path), dtype=torch.bfloat16)


def _image(pipe: Any) -> Any:
    return pipe(**KWARGS, generator=torch.Generator("cpu").manual_seed(0)).images


def _attentions(pipe: Any) -> list[Any]:
    from diffusers.models.attention import AttentionModuleMixin

    return [m for m in pipe.transformer.modules() if isinstance(m, AttentionModuleMixin)]


def test_fused_qkv_and_channels_last_are_applied_and_keep_the_output(tiny_flux_path: Path) -> None:
    reference = _image(_load(tiny_flux_path))
    pipe = qco_tune.apply(_load(tiny_flux_path), {"fuse_qkv": True, "denoiser_channels_last": True}, device="cpu")
    attentions = _attentions(pipe)
    assert attentions and all(a.fused_projections and hasattr(a, "to_qkv") for a in attentions)
    double = [a for a in attentions if getattr(a, "added_kv_proj_dim", None)]
    assert double and all(hasattr(a, "to_added_qkv") for a in double)  # the text stream's projections too
    fused = _image(pipe)
    assert np.isfinite(fused).all()
    # The same matmuls, concatenated: bfloat16 rounding at most.
    assert np.abs(fused - reference).max() < 0.05


def test_fused_projections_under_layerwise_casting_are_stored_in_float8(tiny_flux_path: Path) -> None:
    config = {"fuse_qkv": True, "layerwise_casting": "float8_e4m3fn"}
    pipe = qco_tune.apply(_load(tiny_flux_path), config, device="cpu")
    fused = [a.to_qkv.weight.dtype for a in _attentions(pipe)]
    assert fused and set(fused) == {torch.float8_e4m3fn}  # fused before casting: the hooks cover to_qkv
    assert np.isfinite(_image(pipe)).all()


def test_the_inductor_profile_is_set_before_compiling(tiny_flux_path: Path) -> None:
    import torch._inductor.config as inductor

    flags = INDUCTOR_PROFILES["flux-fast"]
    before = {k: getattr(inductor, k) for k in flags}
    assert before != flags
    try:
        pipe = qco_tune.apply(
            _load(tiny_flux_path), {"compile": "regional", "inductor_profile": "flux-fast"}, device="cpu"
        )
        assert {k: getattr(inductor, k) for k in flags} == flags
        compiled = [m for m in pipe.transformer.modules() if hasattr(m, "_compiled_call_impl")]
        assert any(m._compiled_call_impl is not None for m in compiled)  # compiled lazily, after the flags
    finally:
        for key, value in before.items():
            setattr(inductor, key, value)


def test_the_profile_is_left_alone_when_not_compiling(tiny_flux_path: Path) -> None:
    import torch._inductor.config as inductor

    before = inductor.get_config_copy()
    qco_tune.apply(_load(tiny_flux_path), {"inductor_profile": "flux-fast"}, device="cpu")
    assert inductor.get_config_copy() == before


def test_the_traits_of_the_fast_path() -> None:
    from diffusers import AutoencoderKLWan, FluxTransformer2DModel, SD3Transformer2DModel, WanTransformer3DModel

    from qco_tune.measure.backends.model_traits import model_traits

    def built(cls: Any, **config: Any) -> Any:
        from accelerate import init_empty_weights

        with init_empty_weights():
            return cls(**config)

    flux = built(
        FluxTransformer2DModel,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        in_channels=4,
        axes_dims_rope=(4, 6, 6),
    )
    assert "fused_qkv" in model_traits(flux) and "conv3d" not in model_traits(flux)
    assert not any(hasattr(m, "to_qkv") for m in flux.modules())  # read on a copy: the model is left unfused
    sd3 = built(
        SD3Transformer2DModel,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=16,
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
    )
    assert "fused_qkv" in model_traits(sd3)
    wan = built(
        WanTransformer3DModel,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=16,
    )
    assert {"fused_qkv", "conv3d"} <= set(model_traits(wan))
    assert "fused_qkv" not in model_traits(built(AutoencoderKLWan, base_dim=8, z_dim=4))


def _tiny_transformer() -> Any:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    return model.to(torch.bfloat16)


@pytest.mark.parametrize("config_name", ["Int8WeightOnlyConfig", "Float8WeightOnlyConfig"])
def test_fusing_a_torchao_quantized_denoiser_still_fails(config_name: str) -> None:
    """Why a torchao denoiser is quantized after fusing, not at load (``quantconfigs.quantized_after_fusing``)."""
    import torchao.quantization

    model = _tiny_transformer()
    torchao.quantization.quantize_(model, getattr(torchao.quantization, config_name)())
    with pytest.raises((NotImplementedError, AttributeError)):
        model.fuse_qkv_projections()


def test_fusing_a_quanto_quantized_denoiser_dequantizes_the_fused_projection() -> None:
    from optimum.quanto import QLinear, freeze, qint8, quantize

    model = _tiny_transformer()
    quantize(model, weights=qint8)
    freeze(model)
    model.fuse_qkv_projections()
    attention = model.transformer_blocks[0].attn
    assert isinstance(attention.to_q, QLinear) and not isinstance(attention.to_qkv, QLinear)
