"""Known pipelines as metadata: what a random-weight preset contains, before anything is built.

Stdlib only. Each preset is a ``Blueprint`` (``qco_tune.core.presets.blueprint``): the component classes
and configurations of the public model (FLUX.1 in ``presets.flux``, Wan2.1 in ``presets.wan``, the
tiny test pipelines in ``presets.tiny``), each number with its source named. Building it (random
weights, local tokenizers, ``save_pretrained`` once into the cache) is the job of
``qco_tune.measure.backends.materialize``; this module says which components a preset has, their classes,
their exact parameter counts (counted on the meta device: ``python -m qco_tune.measure.backends.materialize
--count``) and the workload the model is usually run at, so the search space, the memory model and
the spec defaults work without torch.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from qco_tune.core.config import ComponentRole
from qco_tune.core.errors import InputError
from qco_tune.core.presets.blueprint import Blueprint
from qco_tune.core.presets.flux import FLUX_DEV, FLUX_DEV_REDUCED, FLUX_SCHNELL
from qco_tune.core.presets.tiny import TINY_FLUX, TINY_WAN
from qco_tune.core.presets.wan import WAN_1_3B, WAN_14B
from qco_tune.core.records import ComponentInfo, ModelInfo
from qco_tune.core.studyspec import Workload

__all__ = [
    "PRESETS",
    "Preset",
    "UnknownPreset",
    "get_preset",
    "is_preset",
    "preset_for_hub_id",
    "preset_names",
    "suggest_preset",
]

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


class UnknownPreset(InputError):
    """A name that is not a preset; the message suggests the closest preset names."""


@dataclass(frozen=True)
class Preset:
    """A pipeline qco-tune can build with random weights, described without building it."""

    name: str
    """What users write as ``model``, e.g. ``flux.1-dev``."""
    blueprint: Blueprint
    """Component classes and configurations: what the builder makes."""
    params: tuple[tuple[str, int], ...]
    """Exact parameter count per model component (meta-device counts of the blueprint)."""
    workload: Workload
    """The workload the model is usually run at: the default of a study of this preset."""
    is_video: bool = False
    hub_id: str | None = None
    """The hub repository whose configs the preset copies (None for the built-in tiny pipelines)."""
    description: str = ""
    hidden_size: int | None = None
    """Width of the denoiser's token stream (heads x head dim), for activation estimates."""
    num_blocks: int | None = None
    """Transformer blocks of the denoiser, for group-offloading estimates."""
    vae_scale_factor: int = 8
    """Pixels per latent pixel, in height and width."""
    patch_size: int = 2
    """Latent pixels per token, in height and width (FLUX packs 2x2 latents into one token)."""
    temporal_compression: int = 1
    """Frames per latent frame (video VAEs); a video's frame count is 1 plus a multiple of it."""

    @property
    def pipeline_class(self) -> str:
        """The diffusers pipeline class, e.g. ``FluxPipeline``."""
        return self.blueprint.pipeline_class

    @property
    def components(self) -> tuple[ComponentInfo, ...]:
        """Model components (tokenizers and schedulers are not listed: they hold no weights)."""
        counts = dict(self.params)
        return tuple(
            ComponentInfo(name=m.name, role=_role(m.name), class_name=m.class_name, params=counts.get(m.name))
            for m in self.blueprint.models
        )

    @property
    def total_params(self) -> int:
        return sum(n for _, n in self.params)

    def size_bytes(self, dtype: str = "bfloat16") -> int:
        """Bytes of all weights in ``dtype``."""
        return self.total_params * DTYPE_BYTES[dtype]

    def saved_bytes(self) -> int:
        """Bytes the materialised checkpoint takes (weights in the blueprint's ``save_dtype``)."""
        return self.size_bytes(self.blueprint.save_dtype)

    def model_info(self) -> ModelInfo:
        """The preset as a resolved model reference (not materialised yet: ``path`` is None)."""
        return ModelInfo(
            reference=self.name,
            source="preset",
            pipeline_class=self.pipeline_class,
            components=self.components,
            path=None,
            is_video=self.is_video,
        )


def _role(name: str) -> ComponentRole:
    if name.startswith("transformer"):
        return "denoiser"
    return "text_encoder" if name.startswith("text_encoder") else "vae"


_FLUX_COUNTS = (("text_encoder", 123_060_480), ("text_encoder_2", 4_762_310_656), ("vae", 83_819_683))
_WAN_COUNTS = (("text_encoder", 5_680_910_336), ("vae", 126_892_531))
# Both Wan2.1 sizes: 480p (480x832), 33 frames (1 + a multiple of 4), the guide's guidance.
_WAN_WORKLOAD = Workload(
    prompt="a cat walks on the grass, realistic",
    height=480,
    width=832,
    frames=33,
    steps=30,
    guidance=5.0,
    max_sequence_length=512,
)
_FLUX_WIDTH, _FLUX_BLOCKS = 3072, 57  # 24 heads x 128; 19 double + 38 single blocks

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="tiny-flux",
            blueprint=TINY_FLUX,
            params=(("transformer", 81_664), ("text_encoder", 48_106), ("text_encoder_2", 47_488), ("vae", 72_347)),
            workload=Workload(height=64, width=64, steps=2, guidance=3.5, max_sequence_length=32),
            description="a tiny FLUX-shaped pipeline with random weights: sees the whole loop in a minute or two",
            hidden_size=32,
            num_blocks=2,
        ),
        Preset(
            name="flux.1-dev",
            blueprint=FLUX_DEV,
            params=(("transformer", 11_901_408_320), *_FLUX_COUNTS),
            workload=Workload(height=1024, width=1024, steps=28, guidance=3.5, max_sequence_length=512),
            hub_id="black-forest-labs/FLUX.1-dev",
            description="FLUX.1 [dev], 12B text-to-image, random weights",
            hidden_size=_FLUX_WIDTH,
            num_blocks=_FLUX_BLOCKS,
        ),
        Preset(
            name="flux.1-schnell",
            blueprint=FLUX_SCHNELL,
            params=(("transformer", 11_891_178_560), *_FLUX_COUNTS),  # no guidance embedder
            workload=Workload(height=1024, width=1024, steps=4, guidance=0.0, max_sequence_length=256),
            hub_id="black-forest-labs/FLUX.1-schnell",
            description="FLUX.1 [schnell], 12B text-to-image distilled to 1-4 steps, random weights",
            hidden_size=_FLUX_WIDTH,
            num_blocks=_FLUX_BLOCKS,
        ),
        Preset(
            name="flux.1-dev-reduced",
            blueprint=FLUX_DEV_REDUCED,
            params=(
                ("transformer", 1_310_154_816),
                ("text_encoder", 123_060_480),
                ("text_encoder_2", 517_494_784),
                ("vae", 83_819_683),
            ),
            workload=Workload(height=512, width=512, steps=4, guidance=3.5, max_sequence_length=512),
            description=(
                "FLUX.1 [dev] at its real width with 2+4 of 57 transformer blocks and 2 of 24 T5 layers, "
                "random weights: cheap trials of the real kernels (the search benchmark's grid)"
            ),
            hidden_size=_FLUX_WIDTH,
            num_blocks=6,
        ),
        Preset(
            name="wan2.1-t2v-1.3b",
            blueprint=WAN_1_3B,
            params=(("transformer", 1_418_996_800), *_WAN_COUNTS),
            workload=_WAN_WORKLOAD,
            is_video=True,
            hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            description="Wan2.1 text-to-video 1.3B, random weights",
            hidden_size=1536,
            num_blocks=30,
            temporal_compression=4,
        ),
        Preset(
            name="wan2.1-t2v-14b",
            blueprint=WAN_14B,
            params=(("transformer", 14_288_491_584), *_WAN_COUNTS),
            workload=_WAN_WORKLOAD,
            is_video=True,
            hub_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
            description="Wan2.1 text-to-video 14B, random weights",
            hidden_size=5120,
            num_blocks=40,
            temporal_compression=4,
        ),
        Preset(
            name="tiny-wan",
            blueprint=TINY_WAN,
            params=(("transformer", 28_328), ("text_encoder", 47_520), ("vae", 13_861)),
            workload=Workload(
                prompt="a cat walks on the grass, realistic",
                height=32,
                width=32,
                frames=5,
                steps=2,
                guidance=5.0,
                max_sequence_length=32,
            ),
            is_video=True,
            description="a tiny Wan2.1-shaped text-to-video pipeline with random weights (tests the video path)",
            hidden_size=24,
            num_blocks=2,
            temporal_compression=4,
        ),
    )
}


def preset_names() -> tuple[str, ...]:
    """Preset names in a stable order (the tiny FLUX one first, the tiny Wan one last)."""
    return tuple(PRESETS)


def is_preset(name: str) -> bool:
    return name.lower() in PRESETS


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive); ``UnknownPreset`` with a suggestion otherwise."""
    preset = PRESETS.get(name.lower())
    if preset is not None:
        return preset
    close = difflib.get_close_matches(name.lower(), PRESETS, n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownPreset(f"unknown preset {name!r}; {hint}presets: {', '.join(PRESETS)}")


def suggest_preset(name: str) -> str | None:
    """The preset a misspelt ``name`` most likely meant, or None."""
    close = difflib.get_close_matches(name.lower(), PRESETS, n=1, cutoff=0.6)
    return close[0] if close else None


def preset_for_hub_id(hub_id: str) -> Preset | None:
    """The preset that copies the hub repository ``hub_id`` (case-insensitive), if any."""
    return next((p for p in PRESETS.values() if p.hub_id and p.hub_id.lower() == hub_id.lower()), None)
