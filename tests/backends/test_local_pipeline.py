"""A local diffusers folder of a pipeline class no preset has (a UNet StableDiffusionPipeline) runs a trial.

The folder is built here with random weights and local tokenizers and saved with ``save_pretrained``;
``qco-tune run --model FOLDER`` then finds its denoiser (a UNet) and text encoder by itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from backend_helpers import REPO
from tiny_parts import clip_tokenizer, tiny_clip, tiny_unet, tiny_vae

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight StableDiffusionPipeline saved as a diffusers folder."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(0)
    unet = tiny_unet(sample_size=32, cross_attention_dim=32)
    vae = tiny_vae()
    text_encoder = tiny_clip(layers=2)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = tmp_path_factory.mktemp("local") / "tiny-sd"
    pipe.save_pretrained(folder)
    return folder


def _qco(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qco_tune", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "QCO_CACHE": str(tmp_path / "cache")},
    )


def test_a_local_unet_pipeline_runs_a_trial(sd_folder: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/qco.db"
    result = _qco(
        tmp_path,
        "run",
        "--model",
        str(sd_folder),
        *("--height", "64", "--width", "64", "--steps", "2", "--dtype", "float32"),
        *("--trials", "1", "--study", "local-sd", "--storage", url),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="local-sd", storage=url)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL))
    assert len(finished) == 2  # the reference (measurement, not a trial of the target) and the 1 trial
    trial = finished[0]
    m = trial.user_attrs["qco.measurement"]
    assert m["status"] == "ok", (m["reason"], m["output_tail"])
    assert m["extra"]["output_shape"] == [1, 64, 64, 3] and m["step_time_s"] > 0
    assert trial.user_attrs["qco.baseline"] == "reference" and m["psnr_db"] == float("inf")
    model = study.user_attrs["qco.model"]
    assert model["pipeline_class"] == "StableDiffusionPipeline" and model["source"] == "local"
    roles = {c["name"]: c["role"] for c in model["components"]}
    assert roles == {"text_encoder": "text_encoder", "unet": "denoiser", "vae": "vae"}


def test_a_local_folder_missing_a_component_is_refused_at_once(sd_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(sd_folder, broken)
    shutil.rmtree(broken / "vae")
    result = _qco(tmp_path, "run", "--model", str(broken), "--storage", f"sqlite:///{tmp_path}/qco.db")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "is incomplete: vae (AutoencoderKL) has no folder" in line
