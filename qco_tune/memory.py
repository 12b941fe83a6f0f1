"""Predict the peak memory of a configuration before it runs, from parameter counts and the workload.

Stdlib only, deliberately simple, and uncalibrated for now: the study uses it only to skip
configurations predicted *clearly* over budget (``over_budget`` with a 1.5x margin), so being off by
a quarter costs nothing but a trial. The model:

- weights: parameters of each component x bytes per parameter of its quantization (bf16 2,
  int8 and fp8 about 1, NF4/FP4 about 0.56 with the block scales and the layers left unquantized);
- activations: the denoiser's tokens (latent patches + text) x its width x about 24 live tensors,
  and the VAE decode at full resolution (about 10 tensors of 128 channels), whichever is larger;
- offloading: none keeps everything resident; model offload one component at a time; sequential and
  group offloading a few layers or blocks (twice that with a prefetch stream);
- the allocator reserves about 10% more than it allocates, and NVML also sees the CUDA context.

Checked against the FLUX.1-dev measurements in DESIGN.md (bf16 33.9 GiB allocated, NF4 13.1 GiB):
it predicts 34.0 and 11.6 GiB.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qco_tune.config import (
    CUDA_GRAPH_MODES,
    Capabilities,
    ComponentInfo,
    ModelInfo,
    StudySpec,
    TrialConfig,
    format_size,
)
from qco_tune.presets import Preset, get_preset, is_preset, preset_for_hub_id

if TYPE_CHECKING:
    from qco_tune.space import SearchSpace

__all__ = ["MemoryPrediction", "over_budget", "over_budget_bytes", "predict", "smallest_need"]

GIB = 2**30
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
QUANT_BYTES_PER_PARAM = {
    "bnb_nf4": 0.56,
    "bnb_fp4": 0.56,
    "bnb_int8": 1.02,
    "torchao_int8wo": 1.02,
    "torchao_fp8dq": 1.02,
    "quanto_int8": 1.02,
}
"""Bytes per parameter of a quantized component, scales and unquantized layers included."""
ACTIVATION_TENSORS = 24
"""Live tensors of token x width size at the peak of a transformer block (MLP 4x, q/k/v, residuals)."""
VAE_TENSORS = 10
VAE_CHANNELS = 128
VAE_CHUNK_FRAMES = 4
"""Video VAEs decode a few frames at a time."""
DEFAULT_TEXT_TOKENS = 512
LAYER_FRACTION = 0.02
"""Share of a component resident at a time under sequential or leaf-level offloading."""
ALLOCATOR_SLACK = 1.10
"""Reserved / allocated."""
CUDA_CONTEXT = GIB // 2
"""What NVML sees beyond torch's allocator: the CUDA context and the kernels loaded."""
PROCESS_BASE = GIB
"""Host memory of a trial process with torch and diffusers imported."""
DEFAULT_MARGIN = 1.5


@dataclass(frozen=True)
class MemoryPrediction:
    """Predicted peaks of one configuration; ``None`` where parameter counts are unknown."""

    device_bytes: int | None
    """The peak the budget counts: device memory as ``spec.memory_metric`` counts it, or host RAM
    on a machine without CUDA (where the trial runs on the CPU)."""
    host_bytes: int | None
    """Peak host RAM of the trial process (offloaded and pinned weights count)."""
    detail: str
    """One line on how the number was made, for trial attributes and the TUI."""


@dataclass(frozen=True)
class _Shape:
    """What activation estimates need to know about the architecture."""

    hidden_size: int = 3072
    num_blocks: int = 24
    vae_scale_factor: int = 8
    patch_size: int = 2
    temporal_compression: int = 1


def predict(model: ModelInfo, config: TrialConfig, spec: StudySpec, caps: Capabilities) -> MemoryPrediction:
    """Predicted peak memory of running ``config`` of ``model`` on ``spec``'s workload here."""
    unknown = [c.name for c in model.components if c.params is None]
    if unknown:
        return MemoryPrediction(None, None, f"parameter count unknown for {', '.join(unknown)}")
    config = config.canonical()
    weights = {c.name: _weight_bytes(c, config, spec.dtype) for c in model.components}
    shape = _shape(model)
    acts = _activations(model, spec, shape)
    if config.compile != "none" and config.compile_mode in CUDA_GRAPH_MODES:
        acts[model.denoiser] *= 2  # CUDA graphs keep static copies of inputs and outputs
    peak_act = max(acts.values())
    total = sum(weights.values())
    if not caps.cuda:
        host = int(PROCESS_BASE + total + peak_act)
        return MemoryPrediction(host, host, f"CPU: weights {format_size(total)} + activations {format_size(peak_act)}")
    allocated, how = _resident(model, config, weights, acts, shape)
    device = _as_counted(allocated, spec.memory_metric)
    # Offloaded weights live in host memory; otherwise the largest component passes through it while loading.
    host_bytes = PROCESS_BASE + (total if config.offload != "none" else max(weights.values()))
    detail = f"{how}; {spec.memory_metric} ≈ {format_size(device)}"
    return MemoryPrediction(int(device), int(host_bytes), detail)


def _as_counted(allocated: float, metric: str) -> float:
    if metric == "allocated":
        return allocated
    reserved = allocated * ALLOCATOR_SLACK
    return reserved if metric == "reserved" else reserved + CUDA_CONTEXT


def _weight_bytes(component: ComponentInfo, config: TrialConfig, dtype: str) -> float:
    backend = config.backend_for(component.name)
    per_param = QUANT_BYTES_PER_PARAM.get(backend, DTYPE_BYTES.get(dtype, 2))
    return (component.params or 0) * per_param


def _resident(
    model: ModelInfo, config: TrialConfig, weights: dict[str, float], acts: dict[str, float], shape: _Shape
) -> tuple[float, str]:
    """Allocated bytes at the peak and a short account of them."""
    peak_act = max(acts.values())
    if config.offload == "none":
        total = sum(weights.values())
        return total + peak_act, f"all weights resident {format_size(total)} + activations {format_size(peak_act)}"
    if config.offload == "model":
        # One component on the device at a time, with its own activations.
        phase = max(weights[n] + acts.get(n, 0.0) for n in weights)
        return phase, f"model offload: largest component with its activations {format_size(phase)}"
    prefetch = 2 if config.use_stream else 1
    share = {n: w * LAYER_FRACTION * prefetch for n, w in weights.items()}
    if config.offload == "group_block":
        blocks = max(shape.num_blocks, 1)
        share[model.denoiser] = weights[model.denoiser] * min(1.0, prefetch * config.blocks_per_group / blocks)
    phase = max(share[n] + acts.get(n, 0.0) for n in weights)
    return phase, f"{config.offload}: resident share with activations {format_size(phase)}"


def _activations(model: ModelInfo, spec: StudySpec, shape: _Shape) -> dict[str, float]:
    """Peak activation bytes per component that has notable ones (the denoiser and the VAE)."""
    w = spec.workload
    act_bytes = DTYPE_BYTES.get(spec.dtype, 2)
    cell = shape.vae_scale_factor * shape.patch_size
    frames = w.frames if (model.is_video and w.frames) else 1
    latent_frames = (frames - 1) // max(shape.temporal_compression, 1) + 1
    image_tokens = math.ceil(w.height / cell) * math.ceil(w.width / cell) * latent_frames
    text_tokens = w.max_sequence_length or DEFAULT_TEXT_TOKENS
    denoiser = (image_tokens + text_tokens) * shape.hidden_size * act_bytes * ACTIVATION_TENSORS
    decode_frames = min(frames, VAE_CHUNK_FRAMES)
    vae = w.height * w.width * decode_frames * VAE_CHANNELS * act_bytes * VAE_TENSORS
    acts = {model.denoiser: float(denoiser)}
    vae_name = next((c.name for c in model.components if c.role == "vae"), None)
    if vae_name is not None:
        acts[vae_name] = float(vae)
    return acts


def _shape(model: ModelInfo) -> _Shape:
    """Architecture hints from the preset, else from the denoiser's config.json, else typical values."""
    preset = _preset_of(model)
    if preset is not None:
        return _Shape(
            hidden_size=preset.hidden_size or _Shape.hidden_size,
            num_blocks=preset.num_blocks or _Shape.num_blocks,
            vae_scale_factor=preset.vae_scale_factor,
            patch_size=preset.patch_size,
            temporal_compression=preset.temporal_compression,
        )
    default = _Shape(temporal_compression=4 if model.is_video else 1)
    if model.path is None:
        return default
    return _shape_from_config(Path(model.path) / model.denoiser / "config.json", default)


def _preset_of(model: ModelInfo) -> Preset | None:
    if model.source == "preset" and is_preset(model.reference):
        return get_preset(model.reference)
    return preset_for_hub_id(model.reference)


def _shape_from_config(path: Path, default: _Shape) -> _Shape:
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return default
    heads, head_dim = config.get("num_attention_heads"), config.get("attention_head_dim")
    hidden = heads * head_dim if isinstance(heads, int) and isinstance(head_dim, int) else default.hidden_size
    blocks = sum(v for k in ("num_layers", "num_single_layers") if isinstance(v := config.get(k), int))
    patch = config.get("patch_size", default.patch_size)
    patch = patch[-1] if isinstance(patch, list) and patch else patch
    return _Shape(
        hidden_size=hidden,
        num_blocks=blocks or default.num_blocks,
        vae_scale_factor=default.vae_scale_factor,
        patch_size=patch if isinstance(patch, int) and patch > 0 else default.patch_size,
        temporal_compression=default.temporal_compression,
    )


# -- budget checks ---------------------------------------------------------------------------------------


def over_budget(prediction: MemoryPrediction, budget: int, margin: float = DEFAULT_MARGIN) -> bool:
    """True only when the prediction is clearly over ``budget``: more than ``margin`` times it."""
    return prediction.device_bytes is not None and over_budget_bytes(prediction.device_bytes, budget, margin)


def over_budget_bytes(need: int, budget: int, margin: float = DEFAULT_MARGIN) -> bool:
    """True when ``need`` bytes are more than ``margin`` times ``budget``."""
    return need > budget * margin


def smallest_need(space: SearchSpace, model: ModelInfo, spec: StudySpec, caps: Capabilities) -> int | None:
    """The smallest predicted need over every valid configuration of ``space``; None when unknown or empty.

    For the error "nothing in the space can fit the budget (smallest predicted need X)".
    """
    best: int | None = None
    seen: set[tuple[Any, ...]] = set()
    for config in space.enumerate():
        signature = _memory_signature(config)
        if signature in seen:
            continue  # compile scope and stream flags other than use_stream change nothing here
        seen.add(signature)
        need = predict(model, config, spec, caps).device_bytes
        if need is None:
            return None
        best = need if best is None else min(best, need)
    return best


def _memory_signature(config: TrialConfig) -> tuple[Any, ...]:
    graphs = config.compile != "none" and config.compile_mode in CUDA_GRAPH_MODES
    return (config.quantization, config.offload, config.blocks_per_group, config.use_stream, graphs)
