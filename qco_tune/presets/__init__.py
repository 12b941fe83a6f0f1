"""Known pipelines as metadata: what a random-weight preset contains, before anything is built.

Stdlib only. Building the pipeline (random weights, local tokenizers, ``save_pretrained`` once) is the
job of ``qco_tune.backends.tiny``; this module only says which components a preset has, their
classes and their approximate size, so the search space and the memory model work without torch.

Parameter counts of the real models are approximations taken from the public Hugging Face hub:
each model's ``model_index.json``, the component ``config.json`` files and the ``total_size`` of the
``*.safetensors.index.json`` files (bytes, divided by 2 for bf16/fp16 weights). They are to be
replaced by exact counts taken on the meta device.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from qco_tune.config import ComponentInfo, ModelInfo

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


class UnknownPreset(ValueError):
    """A name that is not a preset; the message suggests the closest preset names."""


@dataclass(frozen=True)
class Preset:
    """A pipeline qco-tune can build with random weights, described without building it."""

    name: str
    """What users write as ``model``, e.g. ``flux.1-dev``."""
    pipeline_class: str
    """The diffusers pipeline class, e.g. ``FluxPipeline``."""
    components: tuple[ComponentInfo, ...]
    """Model components (tokenizers and schedulers are not listed: they hold no weights)."""
    is_video: bool = False
    hub_id: str | None = None
    """The hub repository whose configs the preset copies (None for the built-in tiny pipeline)."""
    description: str = ""
    hidden_size: int | None = None
    """Width of the denoiser's token stream (heads x head dim), for activation estimates."""
    num_blocks: int | None = None
    """Transformer blocks of the denoiser, for group-offloading estimates."""
    vae_scale_factor: int = 8
    """Pixels per latent pixel, in height and width."""
    patch_size: int = 2
    """Latent pixels per token, in height and width."""
    temporal_compression: int = 1
    """Frames per latent frame (video VAEs)."""

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


def _c(name: str, role: str, class_name: str, params: int | None) -> ComponentInfo:
    return ComponentInfo(name=name, role=role, class_name=class_name, params=params)  # type: ignore[arg-type]


# The tiny pipeline is defined by its builder in qco_tune.backends.tiny (1+1 transformer blocks,
# tiny CLIP and T5 encoders, a tiny AutoencoderKL).
_TINY_FLUX = Preset(
    name="tiny-flux",
    pipeline_class="FluxPipeline",
    components=(
        # Exact counts of what the builder makes (`python -m qco_tune.backends.tiny` prints them).
        _c("transformer", "denoiser", "FluxTransformer2DModel", 81_664),
        _c("text_encoder", "text_encoder", "CLIPTextModel", 48_106),
        _c("text_encoder_2", "text_encoder", "T5EncoderModel", 47_488),
        _c("vae", "vae", "AutoencoderKL", 72_347),
    ),
    description="a tiny FLUX-shaped pipeline with random weights: sees the whole loop in a minute or two",
    hidden_size=32,
    num_blocks=2,
)

# black-forest-labs/FLUX.1-dev and FLUX.1-schnell share their architecture. From the hub:
# transformer/config.json (19 double + 38 single blocks, 24 heads x 128 = 3072 wide) and the index
# total_size of 23.8 GB bf16 -> ~11.9B; text_encoder is CLIP ViT-L/14's text model (~123M);
# text_encoder_2 is the T5-v1.1-XXL encoder, index total_size 9.52 GB bf16 -> ~4.76B;
# vae is an AutoencoderKL with 16 latent channels (~84M).
_FLUX_COMPONENTS = (
    _c("transformer", "denoiser", "FluxTransformer2DModel", 11_900_000_000),
    _c("text_encoder", "text_encoder", "CLIPTextModel", 123_000_000),
    _c("text_encoder_2", "text_encoder", "T5EncoderModel", 4_760_000_000),
    _c("vae", "vae", "AutoencoderKL", 84_000_000),
)

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers and Wan2.1-T2V-14B-Diffusers, from their model cards and
# transformer/config.json: 30 blocks of 12 x 128 = 1536 (1.3B) and 40 blocks of 40 x 128 = 5120
# (14B); text_encoder is the UMT5-XXL encoder (~5.7B); the Wan VAE (~127M) compresses 8x in
# space and 4x in time; tokens are 1x2x2 latent patches.
_WAN_TEXT_AND_VAE = (
    _c("text_encoder", "text_encoder", "UMT5EncoderModel", 5_700_000_000),
    _c("vae", "vae", "AutoencoderKLWan", 127_000_000),
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _TINY_FLUX,
        Preset(
            name="flux.1-dev",
            pipeline_class="FluxPipeline",
            components=_FLUX_COMPONENTS,
            hub_id="black-forest-labs/FLUX.1-dev",
            description="FLUX.1 [dev], 12B text-to-image, random weights",
            hidden_size=3072,
            num_blocks=57,
        ),
        Preset(
            name="flux.1-schnell",
            pipeline_class="FluxPipeline",
            components=_FLUX_COMPONENTS,
            hub_id="black-forest-labs/FLUX.1-schnell",
            description="FLUX.1 [schnell], 12B text-to-image distilled to 1-4 steps, random weights",
            hidden_size=3072,
            num_blocks=57,
        ),
        Preset(
            name="wan2.1-t2v-1.3b",
            pipeline_class="WanPipeline",
            components=(_c("transformer", "denoiser", "WanTransformer3DModel", 1_300_000_000), *_WAN_TEXT_AND_VAE),
            is_video=True,
            hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            description="Wan2.1 text-to-video 1.3B, random weights",
            hidden_size=1536,
            num_blocks=30,
            temporal_compression=4,
        ),
        Preset(
            name="wan2.1-t2v-14b",
            pipeline_class="WanPipeline",
            components=(_c("transformer", "denoiser", "WanTransformer3DModel", 14_000_000_000), *_WAN_TEXT_AND_VAE),
            is_video=True,
            hub_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
            description="Wan2.1 text-to-video 14B, random weights",
            hidden_size=5120,
            num_blocks=40,
            temporal_compression=4,
        ),
    )
}


def preset_names() -> tuple[str, ...]:
    """Preset names in a stable order (the tiny one first)."""
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
