"""The full-size presets build on the meta device with the real architectures, and their tokenizers have real sizes."""

from __future__ import annotations

import pytest

from qco_tune.core.presets import PRESETS, get_preset
from qco_tune.measure.backends.presets_build import build_model, build_tokenizer, count_parameters

FULL = [name for name, preset in PRESETS.items() if preset.hub_id]


@pytest.mark.parametrize("name", FULL)
def test_meta_counts_are_the_registrys(name: str) -> None:
    preset = get_preset(name)
    counts = count_parameters(preset.blueprint)
    assert {k: n for k, (_, n) in counts.items()} == dict(preset.params)
    assert {k: cls for k, (cls, _) in counts.items()} == {c.name: c.class_name for c in preset.components}


@pytest.mark.parametrize(
    ("name", "component", "expected", "rel"),
    [
        ("flux.1-dev", "transformer", 11.9e9, 0.005),  # 23.8 GB of bf16 on the hub
        ("flux.1-dev", "text_encoder_2", 4.7e9, 0.02),  # T5-v1.1-XXL encoder, 9.52 GB
        ("flux.1-dev", "text_encoder", 123e6, 0.01),  # CLIP ViT-L/14 text model
        ("flux.1-dev", "vae", 84e6, 0.01),
        ("wan2.1-t2v-14b", "transformer", 14e9, 0.03),
        ("wan2.1-t2v-1.3b", "transformer", 1.3e9, 0.1),  # "1.3B" is 1.42 B with the embedders
        ("wan2.1-t2v-1.3b", "text_encoder", 5.7e9, 0.01),  # UMT5-XXL encoder
    ],
)
def test_parameter_counts_match_the_published_sizes(name: str, component: str, expected: float, rel: float) -> None:
    assert dict(get_preset(name).params)[component] == pytest.approx(expected, rel=rel)


def test_the_real_architectures_are_built() -> None:
    flux = build_model(get_preset("flux.1-dev").blueprint.model("transformer"), "meta", "bfloat16")
    assert (len(flux.transformer_blocks), len(flux.single_transformer_blocks), flux.inner_dim) == (19, 38, 3072)
    assert (
        flux.config.guidance_embeds
        and not get_preset("flux.1-schnell").blueprint.model("transformer").config["guidance_embeds"]
    )
    assert next(flux.parameters()).dtype.is_floating_point and str(next(flux.parameters()).dtype) == "torch.bfloat16"
    wan = build_model(get_preset("wan2.1-t2v-14b").blueprint.model("transformer"), "meta", "bfloat16")
    assert len(wan.blocks) == 40 and wan.config.num_attention_heads * wan.config.attention_head_dim == 5120
    t5 = build_model(get_preset("flux.1-dev").blueprint.model("text_encoder_2"), "meta", "bfloat16")
    assert (t5.config.d_model, t5.config.d_ff, t5.config.num_layers, t5.config.num_heads) == (4096, 10240, 24, 64)


@pytest.mark.parametrize(
    ("name", "tokenizer", "encoder", "max_length"),
    [
        ("flux.1-dev", "tokenizer", "text_encoder", 77),
        ("flux.1-dev", "tokenizer_2", "text_encoder_2", 512),
        ("wan2.1-t2v-1.3b", "tokenizer", "text_encoder", 512),
    ],
)
def test_tokenizers_have_the_encoders_vocabulary_and_the_real_length(
    name: str, tokenizer: str, encoder: str, max_length: int
) -> None:
    blueprint = get_preset(name).blueprint
    part = next(t for t in blueprint.tokenizers if t.name == tokenizer)
    tok = build_tokenizer(part)
    assert len(tok) == part.vocab_size == blueprint.model(encoder).config["vocab_size"]
    assert tok.model_max_length == max_length
    ids = tok("a photo of an astronaut", padding="max_length", max_length=max_length, truncation=True).input_ids
    assert len(ids) == max_length and max(ids) < part.vocab_size
    if tokenizer == "tokenizer" and name.startswith("flux"):  # CLIP: real bos/eos ids; eos is the largest id
        assert ids[0] == 49406 and 49407 in ids and max(ids) == 49407


def test_the_reduced_flux_preset_keeps_the_real_width_with_few_blocks() -> None:
    preset = get_preset("flux.1-dev-reduced")
    counts = count_parameters(preset.blueprint)
    assert {k: n for k, (_, n) in counts.items()} == dict(preset.params)
    flux = build_model(preset.blueprint.model("transformer"), "meta", "bfloat16")
    assert (len(flux.transformer_blocks), len(flux.single_transformer_blocks), flux.inner_dim) == (2, 4, 3072)
    assert preset.num_blocks == 6 and preset.hub_id is None
    t5 = build_model(preset.blueprint.model("text_encoder_2"), "meta", "bfloat16")
    assert (t5.config.d_model, t5.config.num_layers) == (4096, 2)
    assert dict(preset.params)["text_encoder"] == dict(get_preset("flux.1-dev").params)["text_encoder"]
