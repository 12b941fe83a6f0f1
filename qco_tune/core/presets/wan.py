"""Wan2.1 text-to-video 1.3B and 14B at full size: the component configurations of the public checkpoints.

Stdlib only. Numbers are copied from the ``config.json`` files of ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``
and ``Wan-AI/Wan2.1-T2V-14B-Diffusers`` on the Hugging Face hub: the transformers differ in width,
depth and MLP size; both share the UMT5-XXL encoder (``google/umt5-xxl``: 256384-row embedding,
prompts padded to 512 tokens), the Wan VAE (8x in space, 4x in time, 16 latent channels) and the
UniPC flow-matching scheduler (``flow_shift`` 3.0, the value for 480p).
"""

from __future__ import annotations

from qco_tune.core.presets.blueprint import Blueprint, ModelPart, SchedulerPart, TokenizerPart

REPO_1_3B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
REPO_14B = "Wan-AI/Wan2.1-T2V-14B-Diffusers"


def _transformer(repo: str, layers: int, heads: int, ffn_dim: int) -> ModelPart:
    return ModelPart(
        "transformer",
        "diffusers",
        "WanTransformer3DModel",
        {
            "patch_size": (1, 2, 2),
            "num_attention_heads": heads,
            "attention_head_dim": 128,
            "in_channels": 16,
            "out_channels": 16,
            "text_dim": 4096,  # UMT5-XXL d_model
            "freq_dim": 256,
            "ffn_dim": ffn_dim,
            "num_layers": layers,
            "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads",
            "eps": 1e-06,
            "image_dim": None,
            "added_kv_proj_dim": None,
            "rope_max_seq_len": 1024,
        },
        source=f"hf.co/{repo} transformer/config.json",
    )


UMT5_XXL_CONFIG = {
    "vocab_size": 256384,
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


def _text_encoder(repo: str) -> ModelPart:
    return ModelPart(
        "text_encoder",
        "transformers",
        "UMT5EncoderModel",
        UMT5_XXL_CONFIG,
        config_class="UMT5Config",
        source=f"hf.co/{repo} text_encoder/config.json",
    )


def _vae(repo: str) -> ModelPart:
    return ModelPart(
        "vae",
        "diffusers",
        "AutoencoderKLWan",
        {
            "base_dim": 96,
            "z_dim": 16,
            "dim_mult": (1, 2, 4, 4),
            "num_res_blocks": 2,
            "attn_scales": (),
            "temperal_downsample": (False, True, True),
            "dropout": 0.0,
            # latents_mean / latents_std: the class defaults are the checkpoint's values.
        },
        source=f"hf.co/{repo} vae/config.json",
    )


def _tokenizer(repo: str) -> TokenizerPart:
    return TokenizerPart(
        name="tokenizer",
        vocab_size=256384,
        max_length=512,
        specials=(("<pad>", 0), ("</s>", 1), ("<unk>", 2)),
        template="$A </s>",
        unk_token="<unk>",
        eos_token="</s>",
        pad_token="<pad>",
        source=f"hf.co/{repo} tokenizer/ (google/umt5-xxl's T5TokenizerFast; the pipeline pads prompts to 512)",
    )


def _scheduler(repo: str) -> SchedulerPart:
    return SchedulerPart(
        "scheduler",
        "UniPCMultistepScheduler",
        {
            "num_train_timesteps": 1000,
            "prediction_type": "flow_prediction",
            "use_flow_sigmas": True,
            "flow_shift": 3.0,
            "solver_order": 2,
            "solver_type": "bh2",
            "predict_x0": True,
            "lower_order_final": True,
            "final_sigmas_type": "zero",
            "timestep_spacing": "linspace",
            "beta_schedule": "linear",
            "beta_start": 0.0001,
            "beta_end": 0.02,
        },
        source=f"hf.co/{repo} scheduler/scheduler_config.json",
    )


def _wan(repo: str, layers: int, heads: int, ffn_dim: int) -> Blueprint:
    return Blueprint(
        pipeline_class="WanPipeline",
        models=(_transformer(repo, layers, heads, ffn_dim), _text_encoder(repo), _vae(repo)),
        tokenizers=(_tokenizer(repo),),
        schedulers=(_scheduler(repo),),
        pipeline_kwargs={"transformer_2": None},
    )


WAN_1_3B = _wan(REPO_1_3B, layers=30, heads=12, ffn_dim=8960)  # 12 x 128 = 1536 wide
WAN_14B = _wan(REPO_14B, layers=40, heads=40, ffn_dim=13824)  # 40 x 128 = 5120 wide
