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


def _qco(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qco_tune", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "QCO_CACHE": str(tmp_path / "cache"), **(env or {})},
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


def test_a_hub_revision_is_what_trials_and_the_exported_snippet_load(sd_folder: Path, tmp_path: Path) -> None:
    # A Hugging Face cache as huggingface_hub lays it out: main at a commit whose download broke off
    # (no VAE), branch v2 at a complete one.
    cache = tmp_path / "hf-cache"
    repo = cache / "models--org--tiny-sd"
    main, v2 = "1" * 40, "2" * 40
    shutil.copytree(sd_folder, repo / "snapshots" / main, ignore=shutil.ignore_patterns("vae"))
    shutil.copytree(sd_folder, repo / "snapshots" / v2)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(main)
    (repo / "refs" / "v2").write_text(v2)
    hf = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    url = f"sqlite:///{tmp_path}/qco.db"
    run = ("run", "--model", "org/tiny-sd", "--storage", url)

    missing = _qco(tmp_path, *run, "--revision", "v3", env=hf)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    (line,) = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert "org/tiny-sd at revision 'v3' is not in the local Hugging Face cache" in line
    assert "`hf download org/tiny-sd --revision v3`" in line

    workload = ("--height", "64", "--width", "64", "--steps", "2", "--dtype", "float32")
    result = _qco(tmp_path, *run, "--revision", "v2", *workload, "--trials", "1", "--study", "rev", env=hf)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="rev", storage=url)
    model = study.user_attrs["qco.model"]
    assert model["path"] == str(repo / "snapshots" / v2) and model["revision"] == "v2"
    assert study.user_attrs["qco.spec"]["revision"] == "v2" and "org/tiny-sd (revision v2)" in " ".join(
        (result.stdout + result.stderr).split()
    )
    reference = study.trials[0]
    assert reference.user_attrs["qco.measurement"]["status"] == "ok", reference.user_attrs.get("qco.reason")

    exported = _qco(tmp_path, "export", "rev", "--trial", "0", "--storage", url, "-o", "snippet.py", env=hf)
    assert exported.returncode == 0, exported.stderr
    snippet = (tmp_path / "snippet.py").read_text()
    assert 'revision="v2"' in snippet
    ran = subprocess.run(
        [sys.executable, "snippet.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **hf},
    )
    assert ran.returncode == 0, ran.stderr[-3000:]  # main's snapshot has no VAE: it loaded v2
    assert (tmp_path / "output.png").is_file()
