"""The shapes the memory model reads from a model: widths, blocks and the VAE's channels (presets or config files).

Stdlib only.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qco_tune.core.presets import Preset, get_preset, is_preset, preset_for_hub_id
from qco_tune.core.records import ComponentInfo, ModelInfo

VAE_CHANNELS = 256
"""Channels entering a VAE's full-resolution stage when its configuration is unknown (FLUX.1's VAE)."""


@dataclass(frozen=True)
class DenoiserShape:
    """What activation estimates need to know about the architecture."""

    hidden_size: int = 3072
    num_blocks: int = 24
    vae_scale_factor: int = 8
    patch_size: int = 2
    temporal_compression: int = 1
    vae_channels: int = VAE_CHANNELS


def denoiser_shape(model: ModelInfo) -> DenoiserShape:
    """Architecture hints from the preset, else from the denoiser's config.json, else typical values."""
    preset = _preset_of(model)
    vae = _component_config(model, next((c.name for c in model.components if c.role == "vae"), None))
    channels = _vae_channels(vae) or VAE_CHANNELS
    if preset is not None:
        return DenoiserShape(
            hidden_size=preset.hidden_size or DenoiserShape.hidden_size,
            num_blocks=preset.num_blocks or DenoiserShape.num_blocks,
            vae_scale_factor=preset.vae_scale_factor,
            patch_size=preset.patch_size,
            temporal_compression=preset.temporal_compression,
            vae_channels=channels,
        )
    default = DenoiserShape(temporal_compression=4 if model.is_video else 1, vae_channels=channels)
    if model.path is None:
        return default
    return _shape_from_config(Path(model.path) / model.denoiser / "config.json", default)


@functools.lru_cache(maxsize=256)
def _component_config(model: ModelInfo, name: str | None) -> dict[str, Any]:
    """A component's configuration: the preset's blueprint, else its ``config.json`` in the model folder.

    Cached: the study predicts many configurations of one model. Callers must not modify the result.
    """
    if name is None:
        return {}
    preset = _preset_of(model)
    if preset is not None:
        part = next((m for m in preset.blueprint.models if m.name == name), None)
        return dict(part.config) if part is not None else {}
    if model.path is None:
        return {}
    try:
        data = json.loads((Path(model.path) / name / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _vae_channels(config: dict[str, Any]) -> int | None:
    """Channels entering the decoder's full-resolution stage: the second of ``block_out_channels``
    (AutoencoderKL: the last upsampler's output), or ``base_dim x dim_mult[1]`` (Wan's VAE)."""
    blocks = config.get("block_out_channels")
    if isinstance(blocks, (list, tuple)) and blocks and all(isinstance(b, int) for b in blocks):
        return int(blocks[1] if len(blocks) > 1 else blocks[0])
    base, mult = config.get("base_dim"), config.get("dim_mult")
    if isinstance(base, int) and isinstance(mult, (list, tuple)) and mult and all(isinstance(m, int) for m in mult):
        return int(base * (mult[1] if len(mult) > 1 else mult[0]))
    return None


def kept_params(model: ModelInfo, component: ComponentInfo) -> int:
    """Parameters of a text encoder that quantization leaves at the dtype: the token embedding
    (``vocab_size x width``; the backends quantize linear layers) and, in T5-family encoders, the
    feed-forward output projections ``wo`` (transformers keeps them out of quantization:
    ``_keep_in_fp32_modules``), 1.0 B parameters of T5-XXL and UMT5-XXL."""
    if component.role != "text_encoder":
        return 0
    config = _component_config(model, component.name)
    vocab = config.get("vocab_size")
    width = config.get("d_model") or config.get("hidden_size")
    if not isinstance(vocab, int) or not isinstance(width, int):
        return 0
    kept = vocab * width
    d_ff, layers = config.get("d_ff"), config.get("num_layers")
    if isinstance(d_ff, int) and isinstance(layers, int):  # T5, UMT5
        kept += d_ff * width * layers
    return kept


def _preset_of(model: ModelInfo) -> Preset | None:
    if model.source == "preset" and is_preset(model.reference):
        return get_preset(model.reference)
    return preset_for_hub_id(model.reference)


def _shape_from_config(path: Path, default: DenoiserShape) -> DenoiserShape:
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return default
    heads, head_dim = config.get("num_attention_heads"), config.get("attention_head_dim")
    hidden = heads * head_dim if isinstance(heads, int) and isinstance(head_dim, int) else default.hidden_size
    blocks = sum(v for k in ("num_layers", "num_single_layers") if isinstance(v := config.get(k), int))
    patch = config.get("patch_size", default.patch_size)
    patch = patch[-1] if isinstance(patch, list) and patch else patch
    return DenoiserShape(
        hidden_size=hidden,
        num_blocks=blocks or default.num_blocks,
        vae_scale_factor=default.vae_scale_factor,
        patch_size=patch if isinstance(patch, int) and patch > 0 else default.patch_size,
        temporal_compression=default.temporal_compression,
        vae_channels=default.vae_channels,
    )
