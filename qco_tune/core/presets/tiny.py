"""The tiny presets: FLUX- and Wan-shaped pipelines at toy widths, for tests and a first look on a laptop.

Stdlib only. They keep the structure of the real models (FLUX: a VAE with 16 latent channels and a
scale factor of 8, 2x2 latent packing, guidance embedding, CLIP pooled + T5 sequence conditioning;
Wan: a causal 3D VAE compressing 8x in space and 4x in time, 1x2x2 patches, a UMT5 encoder), so
the real ``from_pretrained``, quantization and video code paths run in well under a second per call.
The Wan sizes follow diffusers' own pipeline tests (``tests/pipelines/wan/test_wan.py``).
"""

from __future__ import annotations

from qco_tune.core.presets.blueprint import Blueprint, ModelPart, SchedulerPart, TokenizerPart

HIDDEN = 32
"""CLIP hidden size = FLUX pooled_projection_dim; T5/UMT5 d_model = joint_attention_dim / text_dim."""
VOCAB_SIZE = 1000
CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 64
LATENT_CHANNELS = 16

CLIP_TOKENIZER = TokenizerPart(
    name="tokenizer",
    vocab_size=VOCAB_SIZE,
    max_length=CLIP_MAX_LENGTH,
    specials=(("<|startoftext|>", 0), ("<pad>", 1), ("<|endoftext|>", 2), ("<unk>", 3)),
    template="<|startoftext|> $A <|endoftext|>",
    unk_token="<unk>",
    bos_token="<|startoftext|>",
    eos_token="<|endoftext|>",
    pad_token="<pad>",
)


def t5_tokenizer(name: str) -> TokenizerPart:
    """T5-like: ``words </s>``, pad 0, eos 1."""
    return TokenizerPart(
        name=name,
        vocab_size=VOCAB_SIZE,
        max_length=T5_MAX_LENGTH,
        specials=(("<pad>", 0), ("</s>", 1), ("<unk>", 2)),
        template="$A </s>",
        unk_token="<unk>",
        eos_token="</s>",
        pad_token="<pad>",
    )


_T5_TINY = {
    "vocab_size": VOCAB_SIZE,
    "d_model": HIDDEN,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "feed_forward_proj": "gated-gelu",  # T5 v1.1 / UMT5, as FLUX.1 and Wan2.1 use
    "pad_token_id": 0,
    "eos_token_id": 1,
}

TINY_FLUX = Blueprint(
    pipeline_class="FluxPipeline",
    models=(
        ModelPart(
            "transformer",
            "diffusers",
            "FluxTransformer2DModel",
            {
                "patch_size": 1,
                "in_channels": LATENT_CHANNELS * 4,  # 2x2 packed latents, as in FLUX.1
                "num_layers": 1,
                "num_single_layers": 1,
                "attention_head_dim": 16,
                "num_attention_heads": 2,
                "joint_attention_dim": HIDDEN,
                "pooled_projection_dim": HIDDEN,
                "guidance_embeds": True,  # like FLUX.1-dev: guidance_scale is an input of the denoiser
                "axes_dims_rope": (4, 4, 8),  # sums to attention_head_dim
            },
        ),
        ModelPart(
            "text_encoder",
            "transformers",
            "CLIPTextModel",
            {
                "bos_token_id": 0,
                "eos_token_id": 2,
                "pad_token_id": 1,
                "hidden_size": HIDDEN,
                "intermediate_size": 37,
                "num_attention_heads": 4,
                "num_hidden_layers": 2,
                "vocab_size": VOCAB_SIZE,
                "max_position_embeddings": CLIP_MAX_LENGTH,
                "hidden_act": "gelu",
                "projection_dim": HIDDEN,
            },
            config_class="CLIPTextConfig",
        ),
        ModelPart("text_encoder_2", "transformers", "T5EncoderModel", _T5_TINY, config_class="T5Config"),
        ModelPart(
            "vae",
            "diffusers",
            "AutoencoderKL",
            {
                "in_channels": 3,
                "out_channels": 3,
                "down_block_types": ("DownEncoderBlock2D",) * 4,
                "up_block_types": ("UpDecoderBlock2D",) * 4,
                "block_out_channels": (8, 8, 16, 16),  # four blocks: scale factor 8, as in FLUX.1
                "layers_per_block": 1,
                "latent_channels": LATENT_CHANNELS,
                "norm_num_groups": 4,
                "sample_size": 64,
                "use_quant_conv": False,
                "use_post_quant_conv": False,
                "shift_factor": 0.1159,
                "scaling_factor": 0.3611,
            },
        ),
    ),
    tokenizers=(CLIP_TOKENIZER, t5_tokenizer("tokenizer_2")),
    schedulers=(
        SchedulerPart("scheduler", "FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "use_dynamic_shifting": True}),
    ),
    save_dtype="float32",
)

TINY_WAN = Blueprint(
    pipeline_class="WanPipeline",
    models=(
        ModelPart(
            "transformer",
            "diffusers",
            "WanTransformer3DModel",
            {
                "patch_size": (1, 2, 2),
                "num_attention_heads": 2,
                "attention_head_dim": 12,
                "in_channels": 16,
                "out_channels": 16,
                "text_dim": HIDDEN,
                "freq_dim": 256,
                "ffn_dim": 32,
                "num_layers": 2,
                "cross_attn_norm": True,
                "qk_norm": "rms_norm_across_heads",
                "rope_max_seq_len": 32,
            },
            source="diffusers tests/pipelines/wan/test_wan.py",
        ),
        ModelPart("text_encoder", "transformers", "UMT5EncoderModel", _T5_TINY, config_class="UMT5Config"),
        ModelPart(
            "vae",
            "diffusers",
            "AutoencoderKLWan",
            {
                "base_dim": 3,
                "z_dim": 16,
                "dim_mult": (1, 1, 1, 1),
                "num_res_blocks": 1,
                "temperal_downsample": (False, True, True),  # 4x in time, as Wan2.1's VAE
            },
            source="diffusers tests/pipelines/wan/test_wan.py",
        ),
    ),
    tokenizers=(t5_tokenizer("tokenizer"),),
    schedulers=(
        SchedulerPart(
            "scheduler",
            "UniPCMultistepScheduler",
            {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0},
        ),
    ),
    save_dtype="float32",
    pipeline_kwargs={"transformer_2": None},
)
