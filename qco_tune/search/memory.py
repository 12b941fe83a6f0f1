"""Predict the peak memory of a configuration before it runs, and correct the prediction with the study's trials.

Stdlib only. The study skips a configuration whose prediction is over the budget by more than the
model's own measured error (``budget_check``: the calibration's residuals on the study's finished trials,
or ``UNCALIBRATED_MARGIN`` before any finished), so an error costs at most a trial. A prediction is the
largest over the phases of a trial (load, text encoding, denoising, VAE decode) of a sum of terms
(``MemoryTerms``):

- weights resident on the device at the peak, split into unquantized ones (the study's dtype) and
  quantized ones (bytes per parameter of the backend, scales included; what the backends leave
  unquantized, text encoders' token embeddings and T5's feed-forward output projections, at the dtype;
  fused QKV projections add their copy of the denoiser's attention projections, ``FUSED_QKV_SHARE``);
- activations: the denoiser's tokens (latent patches + text) x its width x about 24 live tensors, or
  the VAE decode at full resolution (about 5.5 tensors of the channels entering the full-resolution
  stage, read from the VAE's configuration; a few frames at a time for video), whichever is larger.
  Torch's caching allocator keeps about as much again reserved around them (``ACTIVATION_RESERVED``);
- offloading: none keeps everything resident; model offload one component at a time; sequential and
  group offloading a few layers or blocks (twice that with a prefetch stream);
- the load phase, which matters once weights are offloaded: ``from_pretrained`` with a bitsandbytes
  config quantizes on the GPU (diffusers' and transformers' bitsandbytes quantizers set ``device_map``
  to the current GPU), so every bitsandbytes component is resident at once, quantized, before
  offloading starts; a backend packed on the GPU (``quantconfigs.quantizes_on_device``, torchao int4)
  loads the whole pipeline there. torchao's other configs and quanto quantize on the CPU and move later.
  A torchao denoiser quantized after fusing its QKV projections (flux-fast's order) is whole in the study's
  dtype, fused, where it loads (the device unless offloaded) until ``quantize_`` replaces its weights;
  Group offloading then leaves the allocator's cached blocks of that load reserved (model and sequential
  offload empty the cache when they start), and bitsandbytes 8-bit weights never leave the device;
- overhead: what NVML sees beyond the allocator (the CUDA context, library workspaces, kernels), or
  on a machine without CUDA the trial process itself.

Host RAM is predicted the same way (offloaded weights live there). ``Calibration`` corrects both:
a scale per term and a constant, fitted robustly on the study's finished trials
(``qco_tune.search.calibration``), so predictions improve as the study runs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from qco_tune.calls.backends import BACKEND_INFO
from qco_tune.calls.quantconfigs import quantized_after_fusing
from qco_tune.core.config import CUDA_GRAPH_MODES, TrialConfig
from qco_tune.core.placement import GROUP_PLACEMENTS
from qco_tune.core.records import Capabilities, ComponentInfo, ModelInfo
from qco_tune.core.studyspec import StudySpec
from qco_tune.core.units import GIB, format_size
from qco_tune.search.budget import (
    DEFAULT_MARGIN,
    MARGIN_CAP,
    MARGIN_FLOOR,
    NOTHING_FITS_MARGIN,
    UNCALIBRATED_MARGIN,
    BudgetCheck,
    budget_check,
    over_budget,
    over_budget_bytes,
    skip_margin,
)
from qco_tune.search.memory_phases import resident_terms, sum_weights
from qco_tune.search.memory_terms import UNCALIBRATED, Calibration, Correction, MemoryPrediction, MemoryTerms
from qco_tune.search.shapes import VAE_CHANNELS, DenoiserShape, denoiser_shape, kept_params

if TYPE_CHECKING:
    from qco_tune.search.space import SearchSpace


__all__ = [
    "DEFAULT_MARGIN",
    "GIB",
    "MARGIN_CAP",
    "MARGIN_FLOOR",
    "NOTHING_FITS_MARGIN",
    "UNCALIBRATED_MARGIN",
    "VAE_CHANNELS",
    "BudgetCheck",
    "Calibration",
    "Correction",
    "MemoryPrediction",
    "MemoryTerms",
    "budget_check",
    "over_budget",
    "over_budget_bytes",
    "predict",
    "skip_margin",
    "smallest_need",
]


DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


QUANT_BYTES_PER_PARAM = {name: info.bytes_per_param for name, info in BACKEND_INFO.items()}
"""Bytes per parameter of a quantized component, scales and unquantized layers included."""


LAYERWISE_BYTES_PER_PARAM = {"float8_e4m3fn": 1.0}
"""Bytes per parameter of the denoiser's weights under layerwise casting (stored in float8)."""


VAE_TILE_PIXELS = 512 * 512
"""A tiled VAE decodes tiles of about 512x512 pixels (diffusers' default ``tile_sample_min_size``)."""


ACTIVATION_TENSORS = 24
"""Live tensors of token x width size at the peak of a transformer block (MLP 4x, q/k/v, residuals)."""


VAE_TENSORS = 5.5
"""Live full-resolution tensors of the VAE decode, in units of the channels entering that stage."""


VAE_CHUNK_FRAMES = 4
"""Video VAEs decode a few frames at a time."""


DEFAULT_TEXT_TOKENS = 512


PROCESS_BASE = GIB
"""Host memory of a trial process with torch and diffusers imported."""


LOAD_SHARD_BYTES = 10 * 10**9
"""Loading passes one checkpoint shard through host memory (``save_pretrained``'s default ``max_shard_size``
of diffusers models: 10 GB)."""


def predict(
    model: ModelInfo,
    config: TrialConfig,
    spec: StudySpec,
    caps: Capabilities,
    calibration: Calibration | None = None,
) -> MemoryPrediction:
    """Predicted peak memory of running ``config`` of ``model`` on ``spec``'s workload here."""
    terms = predict_terms(model, config, spec, caps)
    if terms is None:
        unknown = [c.name for c in model.components if c.params is None]
        return MemoryPrediction(None, None, f"parameter count unknown for {', '.join(unknown)}")
    device_terms, host_terms, how = terms
    calibration = calibration or UNCALIBRATED
    raw = device_terms.total
    device = (calibration.host if not caps.cuda else calibration.device).apply(device_terms)
    host = calibration.host.apply(host_terms)
    metric = spec.memory_metric if caps.cuda else "host RAM"
    correction = calibration.device if caps.cuda else calibration.host
    detail = f"{how}; {metric} ≈ {format_size(device)} ({correction.describe()})"
    return MemoryPrediction(int(device), int(host), detail, int(raw), device_terms, host_terms, correction)


def predict_terms(
    model: ModelInfo, config: TrialConfig, spec: StudySpec, caps: Capabilities
) -> tuple[MemoryTerms, MemoryTerms, str] | None:
    """(device terms in the counted metric, host terms, a short account); None when counts are unknown.

    On a machine without CUDA the device terms are the host terms (the budget counts host RAM).
    """
    if any(c.params is None for c in model.components):
        return None
    config = config.canonical()
    shape = denoiser_shape(model)
    weights = {c.name: _weight_bytes(model, c, config, spec.dtype) for c in model.components}
    if config.layerwise_casting != "none" and model.denoiser in weights:
        # Stored in float8 whole, like a quantization of every layer.
        params = model.component(model.denoiser).params or 0
        weights[model.denoiser] = (0.0, params * LAYERWISE_BYTES_PER_PARAM.get(config.layerwise_casting, 1.0))
    if config.fuse_qkv and model.denoiser in weights:
        weights[model.denoiser] = _with_fused_qkv(weights[model.denoiser])
    loading = _while_loading(model, config, weights, spec.dtype)
    acts = _activations(model, spec, shape, vae_tiling=config.vae_tiling)
    if config.compile != "none" and config.compile_mode in CUDA_GRAPH_MODES:
        acts[model.denoiser] *= 2  # CUDA graphs keep static copies of inputs and outputs
    total_plain = sum(plain for plain, _ in weights.values())
    total_quant = sum(quant for _, quant in weights.values())
    if not caps.cuda:
        host = MemoryTerms(total_plain, total_quant, max(acts.values()), PROCESS_BASE)
        how = f"CPU: weights {format_size(total_plain + total_quant)} + activations {format_size(host.activations)}"
        if loading is not weights:
            load = sum_weights(loading, set(loading))
            if sum(load) > host.weights + host.quantized + host.activations:
                host = MemoryTerms(load[0], load[1], 0.0, PROCESS_BASE)
                how = f"CPU: load, {model.denoiser} unquantized and fused {format_size(sum(load))}"
        return host, host, how
    device, how = resident_terms(model, config, weights, acts, shape, spec.memory_metric, loading)
    host = _host_terms(loading, config, max(c.params or 0 for c in model.components) * DTYPE_BYTES.get(spec.dtype, 2))
    return device, host, how


FUSED_QKV_SHARE = 0.18
"""Share of a denoiser's weights in its attention's query, key and value projections, which fusing copies
(diffusers' ``fuse_projections`` keeps the unfused projections): FLUX.1-dev has 2.15 B of its 11.9 B parameters
there (19 double-stream blocks with six 3072x3072 projections, 38 single-stream ones with three). A video
denoiser's share is larger (Wan 2.1 14B: about 0.37, its cross-attention's key and value included)."""


def _with_fused_qkv(weights: tuple[float, float]) -> tuple[float, float]:
    plain, stored = weights
    return plain * (1 + FUSED_QKV_SHARE), stored * (1 + FUSED_QKV_SHARE)


def _while_loading(
    model: ModelInfo, config: TrialConfig, weights: dict[str, tuple[float, float]], dtype: str
) -> dict[str, tuple[float, float]]:
    """The weights at the load's peak: ``weights`` itself, but for a denoiser quantized after fusing
    (``quantconfigs.quantized_after_fusing``), which is whole in ``dtype``, fused, before ``quantize_`` (layer by
    layer: one layer's quantized copy beside it, negligible)."""
    if quantized_after_fusing(config, model.denoiser) is None:
        return weights
    params = model.component(model.denoiser).params or 0
    return {**weights, model.denoiser: _with_fused_qkv((params * DTYPE_BYTES.get(dtype, 2), 0.0))}


def _host_terms(weights: dict[str, tuple[float, float]], config: TrialConfig, largest: float) -> MemoryTerms:
    """Host RAM of a CUDA trial: the process, plus offloaded weights (twice over when group offloading
    prefetches on a stream from pinned copies made up front), else one checkpoint shard being loaded."""
    plain = sum(p for p, _ in weights.values())
    quant = sum(q for _, q in weights.values())
    if not config.is_offloaded:
        return MemoryTerms(min(largest, LOAD_SHARD_BYTES), 0.0, 0.0, PROCESS_BASE)
    copies = 2.0 if config.is_group_offload and config.use_stream and not config.low_cpu_mem_usage else 1.0
    if config.placement:  # only what is offloaded lives on the host, twice over where it is group-offloaded
        offloaded = {n: w for n, w in weights.items() if config.placement_of(n) != "resident"}
        twice = {n for n in offloaded if config.placement_of(n) in GROUP_PLACEMENTS}
        plain = sum(w[0] * (copies if n in twice else 1.0) for n, w in offloaded.items())
        quant = sum(w[1] * (copies if n in twice else 1.0) for n, w in offloaded.items())
        return MemoryTerms(max(plain, min(largest, LOAD_SHARD_BYTES)), quant, 0.0, PROCESS_BASE)
    return MemoryTerms(plain * copies, quant * copies, 0.0, PROCESS_BASE)


def _weight_bytes(model: ModelInfo, component: ComponentInfo, config: TrialConfig, dtype: str) -> tuple[float, float]:
    """(unquantized bytes, quantized bytes) of a component's weights."""
    backend = config.backend_for(component.name)
    params = component.params or 0
    dtype_bytes = DTYPE_BYTES.get(dtype, 2)
    per_param = QUANT_BYTES_PER_PARAM.get(backend)
    if per_param is None:
        return params * dtype_bytes, 0.0
    kept = min(kept_params(model, component), params)
    return kept * dtype_bytes, (params - kept) * per_param


def _activations(model: ModelInfo, spec: StudySpec, shape: DenoiserShape, vae_tiling: bool = False) -> dict[str, float]:
    """Peak activation bytes per component that has notable ones (the denoiser and the VAE).

    A tiled VAE decodes one tile at a time, so its activations are those of a tile at most.
    """
    w = spec.workload
    act_bytes = DTYPE_BYTES.get(spec.dtype, 2)
    cell = shape.vae_scale_factor * shape.patch_size
    frames = w.frames if (model.is_video and w.frames) else 1
    latent_frames = (frames - 1) // max(shape.temporal_compression, 1) + 1
    image_tokens = math.ceil(w.height / cell) * math.ceil(w.width / cell) * latent_frames
    text_tokens = w.max_sequence_length or DEFAULT_TEXT_TOKENS
    denoiser = (image_tokens + text_tokens) * shape.hidden_size * act_bytes * ACTIVATION_TENSORS
    decode_frames = min(frames, VAE_CHUNK_FRAMES)
    pixels = min(w.height * w.width, VAE_TILE_PIXELS) if vae_tiling else w.height * w.width
    vae = pixels * decode_frames * shape.vae_channels * act_bytes * VAE_TENSORS
    acts = {model.denoiser: float(denoiser)}
    vae_name = next((c.name for c in model.components if c.role == "vae"), None)
    if vae_name is not None:
        acts[vae_name] = float(vae)
    return acts


def smallest_need(
    space: SearchSpace, model: ModelInfo, spec: StudySpec, caps: Capabilities, calibration: Calibration | None = None
) -> int | None:
    """The smallest predicted need over every valid configuration of ``space``; None when unknown or empty.

    For the error "nothing in the space can fit the budget (smallest predicted need X)".
    """
    best: int | None = None
    seen: set[tuple[Any, ...]] = set()
    # One representative per memory-relevant part of the runtime and settings (the rules that span
    # several groups read only those parts), so that the walk stays small for a full space.
    for config in space.iter_configs(runtime_key=_runtime_signature, settings_key=_settings_signature):
        signature = _memory_signature(config)
        if signature in seen:
            continue  # compile scope and stream flags other than use_stream change nothing here
        seen.add(signature)
        need = predict(model, config, spec, caps, calibration).device_bytes
        if need is None:
            return None
        best = need if best is None else min(best, need)
    return best


def _runtime_signature(config: TrialConfig) -> tuple[Any, ...]:
    graphs = config.compile != "none" and config.compile_mode in CUDA_GRAPH_MODES
    return (config.offload, config.placement, config.blocks_per_group, config.use_stream, graphs)


def _settings_signature(config: TrialConfig) -> tuple[Any, ...]:
    # The Inductor profile changes no memory, but a rule reads it with the compile scope.
    return (config.layerwise_casting, config.vae_tiling, config.fuse_qkv, config.inductor_profile)


def _memory_signature(config: TrialConfig) -> tuple[Any, ...]:
    return (config.quantization, *_runtime_signature(config), *_settings_signature(config))
