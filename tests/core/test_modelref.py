"""Model references: presets, local diffusers folders, the Hugging Face cache, parameter counts from headers."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from qco_tune.core.modelref import (
    ModelError,
    ModelNotFound,
    classify_component,
    hf_hub_cache,
    local_folder,
    resolve_model,
    safetensors_numel,
)
from qco_tune.core.presets import PRESETS, UnknownPreset, get_preset, preset_for_hub_id, preset_names
from qco_tune.core.records import ModelInfo


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A safetensors file with these (dtype, shape) tensors, zero-filled, written with the stdlib."""
    sizes = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + count * sizes[dtype]]}
        offset += count * sizes[dtype]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def write_pipeline(folder: Path, pipeline: str = "FluxPipeline", denoiser: str = "transformer") -> Path:
    """A small fake diffusers pipeline folder: model_index.json and headers-only-sized weights."""
    index = {
        "_class_name": pipeline,
        "_diffusers_version": "0.42.1",
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        denoiser: ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "image_encoder": [None, None],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    # The denoiser sharded, with an index: 2 x (4x8) + 8 = 72 parameters.
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": {"a.weight": ("BF16", [4, 8])}}
    shards["diffusion_pytorch_model-00002-of-00002.safetensors"] = {
        "b.weight": ("BF16", [4, 8]),
        "b.bias": ("F32", [8]),
    }
    weight_map = {}
    for shard, tensors in shards.items():
        write_safetensors(folder / denoiser / shard, tensors)
        weight_map.update({name: shard for name in tensors})
    (folder / denoiser / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 999}, "weight_map": weight_map})
    )
    # A variant next to it must not be counted twice.
    write_safetensors(folder / denoiser / "diffusion_pytorch_model.fp16.safetensors", {"x": ("F16", [1000])})
    write_safetensors(folder / "text_encoder" / "model.safetensors", {"emb": ("BF16", [10, 3])})  # 30
    # Only an index with total_size (shards not there): 2000 bytes of bf16 = 1000 parameters.
    (folder / "text_encoder_2").mkdir()
    (folder / "text_encoder_2" / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 2000}, "weight_map": {"w": "model-00001-of-00002.safetensors"}})
    )
    write_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors", {"conv": ("F32", [2, 3, 3, 3])})  # 54
    for name in ("tokenizer", "tokenizer_2", "scheduler"):
        (folder / name).mkdir()
    return folder


# -- presets ----------------------------------------------------------------------------------------------


def test_presets_have_what_the_space_needs() -> None:
    assert preset_names()[0] == "tiny-flux"
    assert {"flux.1-dev", "flux.1-schnell", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b"} <= set(PRESETS)
    for preset in PRESETS.values():
        roles = [c.role for c in preset.components]
        assert roles.count("denoiser") == 1 and "vae" in roles and "text_encoder" in roles
        assert all(c.params and c.params > 0 for c in preset.components)


def test_flux_and_wan_presets() -> None:
    flux = get_preset("FLUX.1-dev")  # case does not matter
    assert flux.pipeline_class == "FluxPipeline" and not flux.is_video
    assert {c.name: c.class_name for c in flux.components} == {
        "transformer": "FluxTransformer2DModel",
        "text_encoder": "CLIPTextModel",
        "text_encoder_2": "T5EncoderModel",
        "vae": "AutoencoderKL",
    }
    wan = get_preset("wan2.1-t2v-14b")
    assert wan.pipeline_class == "WanPipeline" and wan.is_video
    assert wan.components[0].params == pytest.approx(14e9, rel=0.03)  # exact meta-device count: 14.29 B
    assert preset_for_hub_id("black-forest-labs/flux.1-schnell") is get_preset("flux.1-schnell")


@pytest.mark.parametrize(
    ("typo", "meant"), [("flux-dev", "flux.1-dev"), ("tiny_flux", "tiny-flux"), ("wan2.1-1.3b", "wan2.1-t2v-1.3b")]
)
def test_a_misspelt_preset_gets_a_suggestion(typo: str, meant: str) -> None:
    with pytest.raises(UnknownPreset, match=f"did you mean '{meant}'"):
        get_preset(typo)
    with pytest.raises(UnknownPreset, match=f"did you mean '{meant}'"):
        resolve_model(typo, "random")


def test_resolving_a_preset() -> None:
    info = resolve_model("flux.1-schnell", "random")
    assert info.source == "preset" and info.path is None and info.denoiser == "transformer"
    assert info.text_encoders == ("text_encoder", "text_encoder_2")


def test_real_weights_are_not_a_preset_thing() -> None:
    with pytest.raises(ModelError, match=r"random weights only.*black-forest-labs/FLUX\.1-dev"):
        resolve_model("flux.1-dev", "real")


# -- local folders ------------------------------------------------------------------------------------------


def test_a_local_pipeline_folder(tmp_path: Path) -> None:
    folder = write_pipeline(tmp_path / "my-flux")
    info = resolve_model(str(folder), "real")
    assert info.source == "local" and info.path == str(folder) and info.pipeline_class == "FluxPipeline"
    assert not info.is_video
    assert [(c.name, c.role, c.params) for c in info.components] == [
        ("text_encoder", "text_encoder", 30),
        ("text_encoder_2", "text_encoder", 1000),
        ("transformer", "denoiser", 72),
        ("vae", "vae", 54),
    ]


def test_a_video_pipeline_folder(tmp_path: Path) -> None:
    folder = write_pipeline(tmp_path / "wan", pipeline="WanPipeline")
    assert resolve_model(str(folder), "real").is_video


def test_random_weights_for_a_folder_are_refused(tmp_path: Path) -> None:
    folder = write_pipeline(tmp_path / "pipe")
    with pytest.raises(ModelError, match=r"random weights are built only for presets \(tiny-flux"):
        resolve_model(str(folder), "random")


def test_a_folder_without_model_index(tmp_path: Path) -> None:
    (tmp_path / "transformer").mkdir()
    with pytest.raises(ModelError, match=r"not a diffusers pipeline folder: no model_index\.json"):
        resolve_model(str(tmp_path), "real")


def test_a_folder_without_a_denoiser(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "X", "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(ModelError, match=r"names no denoiser \(transformer or unet\); components: vae"):
        resolve_model(str(tmp_path), "real")


def test_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no folder"):
        resolve_model(str(tmp_path / "nope"), "real")


@pytest.mark.parametrize(
    ("name", "class_name", "role"),
    [
        ("unet", "UNet2DConditionModel", "denoiser"),
        ("transformer_2", "WanTransformer3DModel", "denoiser"),
        ("prior", "StableCascadeUNet", "denoiser"),
        ("text_encoder_3", "T5EncoderModel", "text_encoder"),
        ("vae", "AutoencoderKLWan", "vae"),
        ("image_encoder", "CLIPVisionModelWithProjection", "other"),
    ],
)
def test_component_roles(name: str, class_name: str, role: str) -> None:
    assert classify_component(name, class_name) == role


def test_safetensors_numel_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {"a": ("BF16", [3, 5]), "b": ("U8", [7])})
    assert safetensors_numel(path) == 22
    path.write_bytes(struct.pack("<Q", 2**40))
    with pytest.raises(ValueError, match="not plausible"):
        safetensors_numel(path)


# -- the Hugging Face cache -------------------------------------------------------------------------------


def test_a_hub_id_not_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFound) as info:
        resolve_model("someone/some-model", "real")
    message = str(info.value)
    assert "\n" not in message
    assert "not in the local Hugging Face cache" in message and str(tmp_path / "hf" / "hub") in message
    assert "`hf download someone/some-model`" in message and "huggingface-cli" not in message
    assert "local diffusers folder" in message and "tiny-flux" in message and "flux.1-dev" in message


def test_a_hub_id_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    repo = tmp_path / "hf" / "hub" / "models--someone--some-model"
    write_pipeline(repo / "snapshots" / "0123abcd")
    write_pipeline(repo / "snapshots" / "old")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")  # as huggingface_hub writes it: no newline
    info = resolve_model("someone/some-model", "real")
    assert info.source == "hub" and info.reference == "someone/some-model"
    assert info.path == str(repo / "snapshots" / "0123abcd")
    assert info.component("transformer").params == 72


def test_hf_hub_cache_wins_over_hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hf_hub_cache() == tmp_path / "cache"
    repo = tmp_path / "cache" / "models--org--name"
    write_pipeline(repo / "snapshots" / "abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    assert resolve_model("org/name", "real").path == str(repo / "snapshots" / "abc")


def test_a_snapshot_no_ref_points_at_is_not_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub resolves ``main`` through ``refs/main``: a stray snapshot folder is not a cached model."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    write_pipeline(tmp_path / "models--org--name" / "snapshots" / "abc")
    with pytest.raises(ModelNotFound, match="not in the local Hugging Face cache"):
        resolve_model("org/name", "real")


def test_a_malformed_hub_id_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match=re.escape("'a--b/c' is not a valid hub id: Cannot have -- or ..")):
        resolve_model("a--b/c", "real")
    assert local_folder("a--b/c") is None


def test_an_incomplete_snapshot_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--org--name"
    write_pipeline(repo / "snapshots" / "abc")
    shutil.rmtree(repo / "snapshots" / "abc" / "vae")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    with pytest.raises(ModelError, match=re.escape("download it again (`hf download org/name`)")):
        resolve_model("org/name", "real")


MAIN_HASH, V2_HASH = "a" * 40, "b" * 40


def two_revisions(cache: Path) -> Path:
    """A cached repository as huggingface_hub lays it out: ``main`` and branch ``v2`` at two commits."""
    repo = cache / "models--org--name"
    write_pipeline(repo / "snapshots" / MAIN_HASH)
    write_pipeline(repo / "snapshots" / V2_HASH, pipeline="WanPipeline")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN_HASH)
    (repo / "refs" / "v2").write_text(V2_HASH)
    return repo


@pytest.mark.parametrize(
    ("revision", "snapshot", "pipeline"),
    [
        (None, MAIN_HASH, "FluxPipeline"),
        ("main", MAIN_HASH, "FluxPipeline"),
        ("v2", V2_HASH, "WanPipeline"),
        (V2_HASH, V2_HASH, "WanPipeline"),  # a commit hash names its snapshot
    ],
)
def test_a_revision_picks_its_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, revision: str | None, snapshot: str, pipeline: str
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo = two_revisions(tmp_path)
    info = resolve_model("org/name", "real", revision)
    assert info.path == str(repo / "snapshots" / snapshot) and info.pipeline_class == pipeline
    assert info.revision == revision and ModelInfo.from_dict(info.to_dict()) == info
    assert local_folder("org/name", revision) == repo / "snapshots" / snapshot


def test_a_revision_not_in_the_cache_names_the_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    two_revisions(tmp_path)
    with pytest.raises(ModelNotFound) as info:
        resolve_model("org/name", "real", "v3")
    message = str(info.value)
    assert "\n" not in message and "org/name at revision 'v3' is not in the local Hugging Face cache" in message
    assert "`hf download org/name --revision v3`" in message
    assert local_folder("org/name", "v3") is None


def test_an_incomplete_revision_names_its_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    shutil.rmtree(two_revisions(tmp_path) / "snapshots" / V2_HASH / "vae")
    with pytest.raises(ModelError, match=re.escape("(`hf download org/name --revision v2`)")):
        resolve_model("org/name", "real", "v2")


def test_a_revision_of_a_preset_or_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="revision 'v2' applies to hub ids only; tiny-flux is a random-weight preset"):
        resolve_model("tiny-flux", "random", "v2")
    folder = write_pipeline(tmp_path / "pipe")
    with pytest.raises(ModelError, match=r"applies to hub ids only; .* is a local folder"):
        resolve_model(str(folder), "real", "v2")


def test_random_weights_for_a_hub_id_point_at_the_preset() -> None:
    with pytest.raises(ModelError, match=re.escape("is preset 'flux.1-dev': write model = 'flux.1-dev'")):
        resolve_model("black-forest-labs/FLUX.1-dev", "random")
