"""Per-model default workloads, workload checks before any GPU time, disk checks and the PSNR constraint field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from fake_machines import H100

from qco_tune.core.modelref import resolve_model
from qco_tune.core.presets import cache as preset_cache
from qco_tune.core.presets import get_preset
from qco_tune.core.presets.cache import DiskSpaceError, check_disk, disk_needed
from qco_tune.core.records import ModelInfo
from qco_tune.core.spec import apply_overrides, load_default_spec, parse_spec, spec_for_model, spec_from_dict
from qco_tune.core.studyspec import Workload
from qco_tune.core.workloads import WorkloadError, check_workload, default_workload, geometry
from qco_tune.loop.setup import prepare

GIB = 2**30


def _shape(w: Workload) -> tuple[Any, ...]:
    return (w.height, w.width, w.frames, w.steps, w.guidance, w.max_sequence_length)


# -- defaults -------------------------------------------------------------------------------------------


def test_a_study_of_a_preset_times_the_models_usual_workload() -> None:
    assert _shape(parse_spec('model = "flux.1-dev"\n').workload) == (1024, 1024, None, 28, 3.5, 512)
    assert _shape(parse_spec('model = "flux.1-schnell"\n').workload) == (1024, 1024, None, 4, 0.0, 256)
    assert _shape(spec_for_model("wan2.1-t2v-1.3b").workload) == (480, 832, 33, 30, 5.0, 512)
    assert _shape(spec_for_model("tiny-wan").workload) == (32, 32, 5, 2, 5.0, 32)
    # The embedded default study is the tiny preset's own workload.
    assert load_default_spec().workload == get_preset("tiny-flux").workload


def test_given_workload_fields_win_over_the_defaults() -> None:
    spec = parse_spec('model = "flux.1-dev"\n[workload]\nheight = 512\nsteps = 4\n')
    assert _shape(spec.workload) == (512, 1024, None, 4, 3.5, 512)


def test_a_hub_id_of_a_preset_and_a_local_folder_get_their_familys_workload(tmp_path: Path) -> None:
    assert default_workload("black-forest-labs/FLUX.1-dev")["steps"] == 28  # not in the cache: the preset says
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert default_workload(str(folder)) == {"height": 512, "width": 512, "steps": 50, "guidance": 7.5}
    assert default_workload("someone/not-cached") == {} and default_workload("./nowhere") == {}


def test_a_new_model_on_the_command_line_brings_its_workload() -> None:
    base = load_default_spec()  # the tiny study
    flux = apply_overrides(base, model="flux.1-dev")
    assert _shape(flux.workload) == (1024, 1024, None, 28, 3.5, 512)
    assert apply_overrides(base, model="flux.1-dev", steps=4).workload.steps == 4
    wan = apply_overrides(flux, model="wan2.1-t2v-14b")
    assert _shape(wan.workload) == (480, 832, 33, 30, 5.0, 512)
    # Fields that were not the old model's defaults are kept.
    custom = apply_overrides(base, height=128)
    assert apply_overrides(custom, model="flux.1-dev").workload.height == 128


def test_a_stored_spec_is_read_back_as_stored() -> None:
    spec = dataclasses.replace(parse_spec('model = "flux.1-dev"\n'), workload=Workload(steps=3))
    from qco_tune.core.studyspec import spec_to_dict

    assert spec_from_dict(spec_to_dict(spec)).workload == Workload(steps=3)


def test_min_psnr_is_a_budget_field_and_a_flag() -> None:
    assert parse_spec("[budget]\nmin_psnr = 30\n").min_psnr == 30.0
    assert apply_overrides(load_default_spec(), min_psnr="32.5").min_psnr == 32.5
    assert load_default_spec().min_psnr is None


# -- checks ---------------------------------------------------------------------------------------------


def _check(model: str, **workload: Any) -> str:
    info = resolve_model(model, "random")
    with pytest.raises(WorkloadError) as error:
        check_workload(dataclasses.replace(get_preset(model).workload, **workload), info)
    return str(error.value)


def test_frames_for_an_image_model() -> None:
    assert "makes images, not videos: leave frames out" in _check("flux.1-dev", frames=33)


def test_a_video_model_needs_frames_of_the_form_4k_plus_1() -> None:
    assert "set frames = 1 + a multiple of 4" in _check("wan2.1-t2v-1.3b", frames=None)
    message = _check("wan2.1-t2v-14b", frames=32)
    assert "workload.frames = 32" in message and "e.g. 29 or 33" in message


def test_resolutions_must_fit_the_vae_and_the_patches() -> None:
    message = _check("flux.1-dev", height=1000, width=1032)
    assert "workload.height = 1000 is not a multiple of 16" in message and "e.g. 992 or 1008" in message
    assert "workload.width = 1032 is not a multiple of 16" in message
    assert "multiple of 16" in _check("wan2.1-t2v-1.3b", width=840)
    for name in ("flux.1-dev", "flux.1-schnell", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "tiny-flux", "tiny-wan"):
        check_workload(get_preset(name).workload, resolve_model(name, "random"))  # the defaults pass


def test_the_geometry_of_a_local_folder_comes_from_its_configs(tmp_path: Path) -> None:
    folder = tmp_path / "pipe"
    (folder / "vae").mkdir(parents=True)
    (folder / "transformer").mkdir()
    (folder / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [8, 8, 8]}))  # 4x
    (folder / "transformer" / "config.json").write_text(json.dumps({"patch_size": 2}))
    model = ModelInfo.from_dict(
        {
            "reference": str(folder),
            "source": "local",
            "pipeline_class": "PixArtSigmaPipeline",
            "components": [
                {"name": "transformer", "role": "denoiser", "class_name": "PixArtTransformer2DModel"},
                {"name": "vae", "role": "vae", "class_name": "AutoencoderKL"},
            ],
            "path": str(folder),
        }
    )
    assert geometry(model).multiple == 8
    check_workload(Workload(height=64, width=72), model)
    with pytest.raises(WorkloadError, match="not a multiple of 8"):
        check_workload(Workload(height=64, width=76), model)


def test_prepare_refuses_a_bad_workload_before_probing_the_machine() -> None:
    spec = parse_spec('model = "flux.1-dev"\n[workload]\nframes = 9\n')
    with pytest.raises(WorkloadError, match="makes images"):
        prepare(spec, H100)


# -- disk -----------------------------------------------------------------------------------------------


def test_too_little_disk_says_how_much_is_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = type("Usage", (), {"total": 100 * GIB, "used": 90 * GIB, "free": 10 * GIB})
    monkeypatch.setattr(preset_cache.shutil, "disk_usage", lambda path: usage)
    need = disk_needed(get_preset("flux.1-dev"))
    assert 31 * GIB < need < 34 * GIB  # 16.9 B parameters in bf16, plus a margin
    with pytest.raises(DiskSpaceError) as error:
        check_disk("flux.1-dev", tmp_path / "cache")
    message = str(error.value)
    assert "needs 33.2 GiB" in message and "only 10.0 GiB is free" in message and "QCO_CACHE" in message
    check_disk("tiny-flux", tmp_path / "cache")  # a few MB fit
    monkeypatch.setenv("QCO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DiskSpaceError):
        prepare(parse_spec('model = "flux.1-dev"\n'), H100)
