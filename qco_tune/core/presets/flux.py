"""FLUX.1 [dev] and [schnell] at full size: the component configurations of the public checkpoints.

Stdlib only. Every number is copied from the ``config.json`` of the component on the Hugging Face
hub (``black-forest-labs/FLUX.1-dev`` and ``black-forest-labs/FLUX.1-schnell``; the two differ in
``guidance_embeds`` and in the scheduler's shift); keys that equal the library defaults are left out.
Tokenizers keep the real vocabulary sizes (CLIP BPE: 49408 with ``<|startoftext|>`` = 49406 and
``<|endoftext|>`` = 49407; T5: 32100 pieces in a 32128-row embedding) and maximum lengths (77, 512).
"""

from __future__ import annotations

from qco_tune.core.presets.blueprint import Blueprint, ModelPart, SchedulerPart, TokenizerPart

DEV_REPO = "black-forest-labs/FLUX.1-dev"
SCHNELL_REPO = "black-forest-labs/FLUX.1-schnell"


def _transformer(repo: str, guidance_embeds: bool) -> ModelPart:
    return ModelPart(
        "transformer",
        "diffusers",
        "FluxTransformer2DModel",
        {
            "patch_size": 1,
            "in_channels": 64,  # 16 latent channels packed 2x2
            "num_layers": 19,  # double-stream (MMDiT) blocks
            "num_single_layers": 38,
            "attention_head_dim": 128,
            "num_attention_heads": 24,  # 24 x 128 = 3072 wide
            "joint_attention_dim": 4096,  # T5-XXL d_model
            "pooled_projection_dim": 768,  # CLIP ViT-L/14 text width
            "guidance_embeds": guidance_embeds,
            "axes_dims_rope": (16, 56, 56),
        },
        source=f"hf.co/{repo} transformer/config.json",
    )


_CLIP = ModelPart(
    "text_encoder",
    "transformers",
    "CLIPTextModel",
    {
        # openai/clip-vit-large-patch14's text model as FLUX.1 ships it (the legacy ids 0/1/2 make the
        # pooled output the position of the largest id, <|endoftext|>, as in the original CLIP).
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
        "projection_dim": 768,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    },
    config_class="CLIPTextConfig",
    source=f"hf.co/{DEV_REPO} text_encoder/config.json",
)

T5_XXL_CONFIG = {
    # google/t5-v1_1-xxl's encoder as FLUX.1 ships it.
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-06,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}

_T5 = ModelPart(
    "text_encoder_2",
    "transformers",
    "T5EncoderModel",
    T5_XXL_CONFIG,
    config_class="T5Config",
    source=f"hf.co/{DEV_REPO} text_encoder_2/config.json",
)

_VAE = ModelPart(
    "vae",
    "diffusers",
    "AutoencoderKL",
    {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (128, 256, 512, 512),  # four blocks: 8x in space
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 16,
        "norm_num_groups": 32,
        "sample_size": 1024,
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
        "force_upcast": True,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "mid_block_add_attention": True,
    },
    source=f"hf.co/{DEV_REPO} vae/config.json",
)

_TOKENIZERS = (
    TokenizerPart(
        name="tokenizer",
        vocab_size=49408,
        max_length=77,
        specials=(("<|startoftext|>", 49406), ("<|endoftext|>", 49407), ("<unk>", 49405)),
        template="<|startoftext|> $A <|endoftext|>",
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",  # FLUX.1's CLIP tokenizer pads with <|endoftext|>
        source=f"hf.co/{DEV_REPO} tokenizer/ (CLIPTokenizer: vocab 49408, model_max_length 77)",
    ),
    TokenizerPart(
        name="tokenizer_2",
        vocab_size=32128,
        max_length=512,
        specials=(("<pad>", 0), ("</s>", 1), ("<unk>", 2)),
        template="$A </s>",
        unk_token="<unk>",
        eos_token="</s>",
        pad_token="<pad>",
        source=f"hf.co/{DEV_REPO} tokenizer_2/ (T5TokenizerFast: 32100 pieces, model_max_length 512)",
    ),
)


def _scheduler(repo: str, dynamic: bool) -> SchedulerPart:
    if dynamic:  # [dev]: resolution-dependent shift
        config = {
            "num_train_timesteps": 1000,
            "shift": 3.0,
            "use_dynamic_shifting": True,
            "base_shift": 0.5,
            "max_shift": 1.15,
            "base_image_seq_len": 256,
            "max_image_seq_len": 4096,
        }
    else:  # [schnell]: timestep-distilled, no shift
        config = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
    return SchedulerPart(
        "scheduler", "FlowMatchEulerDiscreteScheduler", config, source=f"hf.co/{repo} scheduler/scheduler_config.json"
    )


FLUX_DEV = Blueprint(
    pipeline_class="FluxPipeline",
    models=(_transformer(DEV_REPO, guidance_embeds=True), _CLIP, _T5, _VAE),
    tokenizers=_TOKENIZERS,
    schedulers=(_scheduler(DEV_REPO, dynamic=True),),
)

FLUX_SCHNELL = Blueprint(
    pipeline_class="FluxPipeline",
    models=(_transformer(SCHNELL_REPO, guidance_embeds=False), _CLIP, _T5, _VAE),
    tokenizers=_TOKENIZERS,
    schedulers=(_scheduler(SCHNELL_REPO, dynamic=False),),
)


REDUCED_DOUBLE_BLOCKS, REDUCED_SINGLE_BLOCKS, REDUCED_T5_LAYERS = 2, 4, 2


def _reduced(part: ModelPart, note: str, **depth: int) -> ModelPart:
    return ModelPart(
        part.name,
        part.library,
        part.class_name,
        {**part.config, **depth},
        config_class=part.config_class,
        source=f"{part.source}, {note}",
    )


FLUX_DEV_REDUCED = Blueprint(
    # FLUX.1 [dev] at its real width (3072, 24 heads, T5 d_model 4096) and real token counts, with few
    # blocks: cheap trials whose kernels, quantization and offloading behave as the full model's do.
    pipeline_class="FluxPipeline",
    models=(
        _reduced(
            _transformer(DEV_REPO, guidance_embeds=True),
            f"with {REDUCED_DOUBLE_BLOCKS} of 19 double and {REDUCED_SINGLE_BLOCKS} of 38 single blocks",
            num_layers=REDUCED_DOUBLE_BLOCKS,
            num_single_layers=REDUCED_SINGLE_BLOCKS,
        ),
        _CLIP,
        _reduced(_T5, f"with {REDUCED_T5_LAYERS} of 24 layers", num_layers=REDUCED_T5_LAYERS),
        _VAE,
    ),
    tokenizers=_TOKENIZERS,
    schedulers=(_scheduler(DEV_REPO, dynamic=True),),
)
