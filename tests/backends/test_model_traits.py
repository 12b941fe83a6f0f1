"""Knob values a pipeline's own classes cannot take leave the space before any trial, with the reason.

Local folders of SD3 (an MMDiT without ``_repeated_blocks``), SDXL (a UNet) and PixArt-α are built here
with tiny random weights and saved with ``save_pretrained``; their classes are read by the child that
``inspect_model`` starts (configs only, meta weights), as ``qco-tune run`` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from backend_helpers import REPO
from fake_machines import H200 as FAKE_H200
from tiny_parts import clip_tokenizer, t5_tokenizer, tiny_clip, tiny_t5, tiny_unet, tiny_vae

from qco_tune.core.modelref import resolve_model
from qco_tune.core.presets import PRESETS
from qco_tune.core.records import COMPONENT_TRAITS, Capabilities, ModelInfo
from qco_tune.core.spec import parse_spec
from qco_tune.measure.runner import inspect_model
from qco_tune.search.space import SearchSpace

pytest.importorskip("diffusers")

# A GPU that would run every attention backend: what is left out is left out for the model's sake.
H200 = dataclasses.replace(FAKE_H200, backends=("torchao",), attention_backends=("native", "_native_cudnn", "flash"))


def _sd3() -> object:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=64,
        caption_projection_dim=16,
        pooled_projection_dim=64,
        out_channels=4,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=tiny_vae(scaling_factor=1.5035, shift_factor=0.0609),  # SD3's VAE shifts its latents
        text_encoder=tiny_clip(projection=True),
        tokenizer=clip_tokenizer(),
        text_encoder_2=tiny_clip(projection=True),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=tiny_t5(64),  # as wide as joint_attention_dim: the CLIP embeddings are padded to it
        tokenizer_3=t5_tokenizer("tokenizer_3"),
    )


def _sdxl() -> object:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    unet = tiny_unet(
        sample_size=16,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 x 8 + 32
        cross_attention_dim=64,
    )
    return StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_clip(),
        text_encoder_2=tiny_clip(projection=True),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(),
    )


def _pixart() -> object:
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=16,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    return PixArtAlphaPipeline(
        tokenizer=t5_tokenizer("tokenizer"),
        text_encoder=tiny_t5(32),
        vae=tiny_vae(),
        transformer=transformer,
        scheduler=DDIMScheduler(),
    )


BUILDERS = {"sd3": _sd3, "sdxl": _sdxl, "pixart": _pixart}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("pipelines")
    made = {}
    for name, build in BUILDERS.items():
        build().save_pretrained(root / name)  # type: ignore[attr-defined]
        made[name] = root / name
    return made


@pytest.fixture(scope="module")
def models(folders: dict[str, Path]) -> dict[str, ModelInfo]:
    return {name: inspect_model(resolve_model(str(folder), "real")) for name, folder in folders.items()}


def _space(model: ModelInfo, caps: Capabilities = H200, space: str = "") -> SearchSpace:
    spec = parse_spec(f'model = "{model.path}"\nweights = "real"\n[budget]\nvram = "8GiB"\n{space}')
    return SearchSpace.build(spec, model, caps)


def test_the_classes_say_what_they_offer(models: dict[str, ModelInfo]) -> None:
    traits = {name: {c.name: c.traits for c in m.components} for name, m in models.items()}
    assert traits["sd3"] == {
        "transformer": ("fused_qkv",),
        "text_encoder": None,
        "text_encoder_2": None,
        "text_encoder_3": None,
        "vae": ("tiling", "slicing", "fused_qkv"),
    }
    assert traits["sdxl"]["unet"] == ("repeated_blocks", "fused_qkv")
    assert traits["sdxl"]["vae"] == ("tiling", "slicing", "fused_qkv")
    assert traits["pixart"]["transformer"] == ("fused_qkv",) and traits["pixart"]["text_encoder"] is None


def test_what_the_model_cannot_take_leaves_the_space_with_its_reason(models: dict[str, ModelInfo]) -> None:
    sd3 = _space(models["sd3"])
    assert sd3.knobs()["compile"] == ("none", "full") and "attention_backend" not in sd3.knobs()
    missing = dict(sd3.missing())
    assert missing["compile=regional"] == (
        "SD3Transformer2DModel declares no repeated blocks (_repeated_blocks), so compile_repeated_blocks has "
        "nothing to compile; compile=full compiles it whole"
    )
    assert missing["attention_backend=flash"] == (
        "SD3Transformer2DModel's attention processors do not go through diffusers' attention dispatch, "
        "so set_attention_backend('flash') would change nothing"
    )
    assert sd3.knobs()["vae_tiling"] == (False, True)
    # The UNet repeats BasicTransformerBlock: regional compile stays; its processors ignore backends.
    sdxl = _space(models["sdxl"])
    assert sdxl.knobs()["compile"] == ("none", "regional", "full") and "attention_backend" not in sdxl.knobs()
    assert "UNet2DConditionModel's attention processors" in dict(sdxl.missing())["attention_backend=_native_cudnn"]
    pixart = _space(models["pixart"])
    assert pixart.knobs()["compile"] == ("none", "full")
    assert "PixArtTransformer2DModel declares no repeated blocks" in dict(pixart.missing())["compile=regional"]
    # A configuration that needs a value the model lacks breaks a rule (a replayed or queued one).
    assert any("declares no repeated blocks" in why for why in sd3.violations(sd3.config_from({}, compile="regional")))


def test_a_vae_without_tiling_loses_the_knob(models: dict[str, ModelInfo]) -> None:
    sd3 = models["sd3"]
    untiled = sd3.with_traits({"vae": ("slicing",)})
    space = _space(untiled)
    assert "vae_tiling" not in space.knobs()
    why = dict(space.missing())["vae_tiling"]
    assert why == "AutoencoderKL does not implement tiling (enable_tiling finds no use_tiling)"


def test_the_preset_classes_offer_every_knob() -> None:
    """Presets are not inspected (``traits`` None keeps every value): their classes must offer them all."""
    from qco_tune.measure.backends.model_traits import model_traits
    from qco_tune.measure.backends.presets_build import build_model

    for preset in PRESETS.values():
        for part in preset.blueprint.models:
            if part.library != "diffusers":
                continue
            model = build_model(part, device="meta")
            expected = ("tiling", "slicing") if part.name == "vae" else ("repeated_blocks", "attention_dispatch")
            # Fused QKV everywhere but Wan's VAE; 3D convolutions exactly in the video presets (the fallback of
            # an uninspected denoiser for channels-last).
            expected += ("fused_qkv",) if not (part.name == "vae" and preset.is_video) else ()
            expected += ("conv3d",) if preset.is_video else ()
            assert tuple(model_traits(model)) == expected, (preset.name, part.name)
    assert set(COMPONENT_TRAITS) == {
        "repeated_blocks",
        "attention_dispatch",
        "tiling",
        "slicing",
        "fused_qkv",
        "conv3d",
    }


def test_stored_traits_read_back_and_old_records_have_none(models: dict[str, ModelInfo]) -> None:
    sd3 = models["sd3"]
    assert ModelInfo.from_dict(json.loads(json.dumps(sd3.to_dict()))) == sd3
    old = sd3.to_dict()
    for component in old["components"]:
        component.pop("traits")
    assert all(c.traits is None for c in ModelInfo.from_dict(old).components)
    assert _space(ModelInfo.from_dict(old)).knobs()["compile"] == ("none", "regional", "full")


def test_a_worker_searches_the_space_the_study_was_created_with(models: dict[str, ModelInfo]) -> None:
    """Optuna needs one set of choices per study: a worker takes the stored traits, not its own diffusers'."""
    from qco_tune.core.keys import MODEL_ATTR
    from qco_tune.loop.worker import study_model

    study = optuna.create_study(storage="sqlite:///:memory:")
    sd3 = models["sd3"]
    study.set_user_attr(MODEL_ATTR, sd3.to_dict())
    fresh = resolve_model(str(sd3.path), "real")
    assert fresh.component("transformer").traits is None
    assert study_model(study, fresh) == sd3


@pytest.mark.slow
def test_an_sd3_study_runs_no_regional_compile(folders: dict[str, Path], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/qco.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "QCO_CACHE": str(tmp_path / "cache"), "COLUMNS": "250"}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "qco_tune", "run", "--model", str(folders["sd3"])),
            *("--height", "32", "--width", "32", "--steps", "1", "--dtype", "float32", "--compile", "none,regional"),
            *("--trials", "2", "--study", "local-sd3", "--storage", url),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    show = subprocess.run(
        [sys.executable, "-m", "qco_tune", "show", "local-sd3", "--storage", url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert show.returncode == 0, show.stderr[-3000:]
    listed = show.stdout.split("not in the space here", 1)[1]
    assert "compile=regional: SD3Transformer2DModel declares no repeated blocks (_repeated_blocks)" in listed
    study = optuna.load_study(study_name="local-sd3", storage=url)
    measured = [t.user_attrs["qco.measurement"] for t in study.trials if "qco.measurement" in t.user_attrs]
    assert len(measured) >= 2 and all(m["status"] == "ok" for m in measured), [m["reason"] for m in measured]
    assert all(t.params.get("compile") != "regional" for t in study.trials)
    traits = {c["name"]: c["traits"] for c in study.user_attrs["qco.model"]["components"]}
    assert traits["transformer"] == ["fused_qkv"]
