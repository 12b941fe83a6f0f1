"""The workload a model is run at by default, and the checks a pipeline would otherwise make on the GPU.

Stdlib only. A study of ``flux.1-dev`` should time 1024x1024 images in 28 steps, not the tiny
default's 64x64 in 2: ``default_workload`` gives a preset's own workload, else that of the
pipeline's family (read from ``model_index.json`` of a local folder or a cached hub snapshot).
``check_workload`` refuses, before any GPU time is spent, what the pipeline would reject or
silently change: frames for an image model, no frames for a video model, a frame count the video
VAE cannot compress, or a resolution that is not a multiple of the VAE's scale factor times the
denoiser's patch size (diffusers would resize it and time a different workload).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qco_tune.core.modelref import local_folder
from qco_tune.core.presets import get_preset, is_preset, preset_for_hub_id
from qco_tune.core.records import ModelInfo
from qco_tune.core.studyspec import Workload

__all__ = ["FAMILY_WORKLOADS", "Geometry", "WorkloadError", "check_workload", "default_workload", "geometry"]


class WorkloadError(ValueError):
    """A workload the pipeline would reject or change; the message names the field and a valid value."""


FAMILY_WORKLOADS: tuple[tuple[str, dict[str, Any]], ...] = (
    # (pipeline class prefix, workload fields): the models' documented usage, first match wins.
    ("Flux", {"height": 1024, "width": 1024, "steps": 28, "guidance": 3.5, "max_sequence_length": 512}),
    ("Wan", {"height": 480, "width": 832, "frames": 33, "steps": 30, "guidance": 5.0, "max_sequence_length": 512}),
    ("StableDiffusion3", {"height": 1024, "width": 1024, "steps": 28, "guidance": 7.0}),
    ("StableDiffusionXL", {"height": 1024, "width": 1024, "steps": 30, "guidance": 5.0}),
    ("StableDiffusion", {"height": 512, "width": 512, "steps": 50, "guidance": 7.5}),
    ("PixArt", {"height": 1024, "width": 1024, "steps": 20, "guidance": 4.5}),
    ("Sana", {"height": 1024, "width": 1024, "steps": 20, "guidance": 4.5}),
)


def default_workload(reference: str, revision: str | None = None) -> dict[str, Any]:
    """Workload fields a study of ``reference`` defaults to (fields left out keep ``Workload``'s defaults).

    A preset's (or the preset of a hub id) own workload; else its pipeline family's, when the folder
    or cached snapshot is there to say which pipeline it is; else nothing.
    """
    preset = get_preset(reference) if is_preset(reference) else preset_for_hub_id(reference.strip())
    if preset is not None:
        return dataclasses.asdict(preset.workload)
    folder = local_folder(reference, revision)
    if folder is None:
        return {}
    pipeline = _read_json(folder / "model_index.json").get("_class_name")
    return family_workload(pipeline) if isinstance(pipeline, str) else {}


def family_workload(pipeline_class: str) -> dict[str, Any]:
    """The default workload fields of a pipeline class's family, or ``{}``."""
    return next((dict(fields) for prefix, fields in FAMILY_WORKLOADS if pipeline_class.startswith(prefix)), {})


# -- geometry ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """What a pipeline requires of a workload's shape."""

    pipeline_class: str
    is_video: bool
    vae_scale_factor: int = 8
    """Pixels per latent pixel in height and width."""
    patch_size: int = 1
    """Latent pixels per token in height and width (FLUX packs 2x2 latents)."""
    temporal_compression: int = 1
    """Frames per latent frame; a video has 1 + k x this many frames."""

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this."""
        return self.vae_scale_factor * self.patch_size


def geometry(model: ModelInfo) -> Geometry:
    """The geometry of a preset (from its metadata) or of a folder (from its VAE and denoiser configs)."""
    if model.source == "preset" and is_preset(model.reference):
        p = get_preset(model.reference)
        return Geometry(model.pipeline_class, model.is_video, p.vae_scale_factor, p.patch_size, p.temporal_compression)
    folder = Path(model.path) if model.path else None
    vae_name = next((c.name for c in model.components if c.role == "vae"), "vae")
    vae = _read_json(folder / vae_name / "config.json") if folder else {}
    denoiser = _read_json(folder / model.denoiser / "config.json") if folder else {}
    patch = _patch(denoiser)
    if model.pipeline_class.startswith("Flux"):
        patch = max(patch, 2)  # FLUX packs 2x2 latent pixels into one token
    temporal = _temporal(vae) if model.is_video else 1
    return Geometry(model.pipeline_class, model.is_video, _spatial(vae), patch, temporal)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _spatial(vae: dict[str, Any]) -> int:
    for key in ("scale_factor_spatial", "spatial_compression_ratio"):
        if _int(vae.get(key)):
            return int(vae[key])
    if isinstance(vae.get("temperal_downsample"), list):  # the Wan VAE: one spatial halving per entry
        return 2 ** len(vae["temperal_downsample"])
    blocks = vae.get("block_out_channels")
    return 2 ** (len(blocks) - 1) if isinstance(blocks, list) and blocks else 8


def _temporal(vae: dict[str, Any]) -> int:
    for key in ("scale_factor_temporal", "temporal_compression_ratio"):
        if _int(vae.get(key)):
            return int(vae[key])
    if isinstance(vae.get("temperal_downsample"), list):
        return 2 ** sum(1 for v in vae["temperal_downsample"] if v)
    return 4


def _patch(denoiser: dict[str, Any]) -> int:
    patch = denoiser.get("patch_size")
    if isinstance(patch, list) and patch:
        patch = patch[-1]
    return _int(patch) or 1


# -- checks -----------------------------------------------------------------------------------------------


def check_workload(workload: Workload, model: ModelInfo) -> None:
    """Raise ``WorkloadError`` naming every field of ``workload`` that ``model``'s pipeline would reject or change."""
    g = geometry(model)
    problems = [p for p in (_frames_problem(workload, g), *_size_problems(workload, g)) if p]
    if problems:
        raise WorkloadError(f"{model.reference} ({g.pipeline_class}): " + "; ".join(problems))


def _frames_problem(workload: Workload, g: Geometry) -> str | None:
    frames, t = workload.frames, g.temporal_compression
    if not g.is_video:
        if frames is not None:
            return f"workload.frames = {frames}, but {g.pipeline_class} makes images, not videos: leave frames out"
        return None
    if frames is None:
        return f"workload.frames is not set, and {g.pipeline_class} makes videos: set frames = 1 + a multiple of {t}"
    if t > 1 and (frames - 1) % t:
        lower = frames - (frames - 1) % t
        return (
            f"workload.frames = {frames}: {g.pipeline_class} needs 1 + a multiple of {t} frames (its VAE "
            f"compresses {t} frames into one), e.g. {lower} or {lower + t}"
        )
    return None


def _size_problems(workload: Workload, g: Geometry) -> list[str]:
    m = g.multiple
    how = f"its VAE scales by {g.vae_scale_factor}"
    if g.patch_size > 1:
        how += f" and tokens are {g.patch_size}x{g.patch_size} latents"
    problems = []
    for name in ("height", "width"):
        value = getattr(workload, name)
        if value % m:
            lower = value - value % m
            examples = f"{lower} or {lower + m}" if lower else f"{m}"
            problems.append(f"workload.{name} = {value} is not a multiple of {m} ({how}), e.g. {examples}")
    return problems
