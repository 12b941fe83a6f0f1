"""Tiny random-weight parts of diffusers pipelines, for the tests that build a pipeline folder themselves
(``save_pretrained``) to see how qco-tune reads a model no preset has. Imports diffusers and transformers
when called."""

from __future__ import annotations

from typing import Any


def tiny_clip(projection: bool = False, layers: int = 1) -> Any:
    """A CLIP text encoder 32 wide (with the projection of SD3's and SDXL's second encoder, ``projection``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=layers,
        vocab_size=1000,
        projection_dim=32,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def clip_tokenizer() -> Any:
    """The tiny presets' CLIP tokenizer, built locally (no download)."""
    from qco_tune.core.presets.tiny import CLIP_TOKENIZER
    from qco_tune.measure.backends.presets_build import build_tokenizer

    return build_tokenizer(CLIP_TOKENIZER)


def tiny_t5(width: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=1000, d_model=width, d_kv=8, d_ff=37, num_layers=1, num_heads=4))


def t5_tokenizer(name: str) -> Any:
    """The tiny presets' T5 tokenizer as pipeline component ``name``, built locally."""
    from qco_tune.core.presets.tiny import t5_tokenizer as tokenizer_files
    from qco_tune.measure.backends.presets_build import build_tokenizer

    return build_tokenizer(tokenizer_files(name))


def tiny_vae(**config: float) -> Any:
    """A 2D ``AutoencoderKL`` with 4 latent channels (``config``: e.g. SD3's scaling and shift factors)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        **config,
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=2,
    )


def tiny_unet(**config: Any) -> Any:
    """A ``UNet2DConditionModel`` of two levels, one cross-attention (``config``: its size and conditioning)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=2,
        **config,
    )
