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

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from qco_tune.calls.backends import BACKEND_INFO
from qco_tune.calls.placement import placement_steps
from qco_tune.calls.quantconfigs import quantized_after_fusing, quantizes_on_device
from qco_tune.core.config import CUDA_GRAPH_MODES, TrialConfig
from qco_tune.core.placement import GROUP_PLACEMENTS, HOOKED_PLACEMENTS, RUN_ORDER
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


LAYER_FRACTION = 0.02
"""Share of a component resident at a time under sequential or leaf-level offloading."""


ACTIVATION_RESERVED = 1.9
"""Reserved / allocated of activations: the caching allocator keeps freed blocks of the denoiser's and the
VAE's transient tensors (FLUX.1-dev at 1024x1024 on an H100: about 2.4 GiB reserved beyond the allocated
peak, bf16 or NF4 alike). Weights are allocated once, at their size."""


CUDA_CONTEXT = int(0.7 * GIB)
"""What NVML sees beyond torch's allocator: the CUDA context (0.51 GiB measured on an H100), library
workspaces and the kernels loaded (NVML minus reserved on an H100: 0.7 GiB for FLUX.1-dev NF4, 0.65 to
0.75 GiB for the tiny pipeline)."""


PROCESS_BASE = GIB
"""Host memory of a trial process with torch and diffusers imported."""


LOAD_SHARD_BYTES = 10 * 10**9
"""Loading passes one checkpoint shard through host memory (``save_pretrained``'s default ``max_shard_size``
of diffusers models: 10 GB)."""


LOADS_ON_DEVICE = frozenset(name for name, info in BACKEND_INFO.items() if info.loads_on_device)
"""Backends whose ``from_pretrained`` quantizes on the GPU: the bitsandbytes quantizers of diffusers and
transformers put the component on the current GPU (``update_device_map``) whatever its later placement.
Measured on the H200 (studies of 2026-12-01, trials 4 and 5): NF4 transformer + T5 with group or model
offload peaked at 10.26 GiB allocated, the two quantized components together, at load."""


STAYS_ON_DEVICE = frozenset(name for name, info in BACKEND_INFO.items() if info.stays_on_device)
"""Backends whose weights stay on the device when the pipeline is offloaded: ``Int8Params`` keeps its
``CB`` (the int8 weight) on the GPU when a parent module moves it (``nn.Module._apply`` replaces the
parameter's data, not the ``CB`` attribute), so offloading frees nothing of it (bitsandbytes 0.50).
H200 trial 8 (bnb_int8 transformer, model offload) ran out of memory at 15.4 GiB allocated with a
prediction of 13.6 GiB that offloaded it."""


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
            load = _sum_weights(loading, set(loading))
            if sum(load) > host.weights + host.quantized + host.activations:
                host = MemoryTerms(load[0], load[1], 0.0, PROCESS_BASE)
                how = f"CPU: load, {model.denoiser} unquantized and fused {format_size(sum(load))}"
        return host, host, how
    device, how = _resident(model, config, weights, acts, shape, spec.memory_metric, loading)
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


def _as_counted(resident: tuple[float, float], activations: float, metric: str) -> MemoryTerms:
    plain, quant = resident
    if metric == "allocated":
        return MemoryTerms(plain, quant, activations, 0.0)
    reserved = activations * ACTIVATION_RESERVED
    return MemoryTerms(plain, quant, reserved, CUDA_CONTEXT if metric == "device" else 0.0)


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


def _resident(
    model: ModelInfo,
    config: TrialConfig,
    weights: dict[str, tuple[float, float]],
    acts: dict[str, float],
    shape: DenoiserShape,
    metric: str,
    loading: dict[str, tuple[float, float]],
) -> tuple[MemoryTerms, str]:
    """The counted terms at the peak (the phase that needs most), and a short account of them; ``loading``: the
    weights at the load's peak (``_while_loading``)."""
    peak_act = max(acts.values())
    if config.placement:
        return _resident_per_component(model, config, weights, acts, shape, metric, loading)
    if config.offload == "none":
        # Loading holds no more than the pipeline placed whole on the device afterwards, unless the denoiser
        # is quantized after it loads.
        plain = sum(p for p, _ in weights.values())
        quant = sum(q for _, q in weights.values())
        how = f"all weights resident {format_size(plain + quant)} + activations {format_size(peak_act)}"
        running = _as_counted((plain, quant), peak_act, metric)
        at_load = _as_counted(_sum_weights(loading, set(loading)), 0.0, metric)
        if at_load.total > running.total:
            return at_load, f"load: {model.denoiser} unquantized and fused beside the rest {format_size(at_load.total)}"
        return running, how
    loaded = _loaded_on_device(model, config)
    load = _sum_weights(loading, loaded)
    pinned = _sum_weights(weights, {n for n in loaded if config.backend_for(n) in STAYS_ON_DEVICE})
    # Cached blocks of the load that group offloading leaves reserved (model and sequential offload
    # call empty_cache when they start); what stays on the device is allocated in every phase anyway.
    cached = (load[0] - pinned[0], load[1] - pinned[1]) if config.is_group_offload else (0.0, 0.0)
    if config.offload == "model":
        share = dict.fromkeys(weights, 1.0)  # one component on the device at a time, with its own activations
    else:
        prefetch = 2 if config.use_stream else 1
        share = dict.fromkeys(weights, LAYER_FRACTION * prefetch)
        if config.offload == "group_block":
            blocks = max(shape.num_blocks, 1)
            share[model.denoiser] = min(1.0, prefetch * config.blocks_per_group / blocks)
    phases: dict[str, tuple[MemoryTerms, str]] = {}
    if load != (0.0, 0.0):
        names = ", ".join(sorted(loaded))
        how = f"load: {names} on the device {format_size(sum(load))}"
        phases["load"] = (_as_counted(load, 0.0, metric), how)
    for name, w in weights.items():
        own = (0.0, 0.0) if config.backend_for(name) in STAYS_ON_DEVICE and name in loaded else w
        plain = own[0] * share[name] + pinned[0]
        quant = own[1] * share[name] + pinned[1]
        terms = _as_counted((plain, quant), acts.get(name, 0.0), metric)
        if metric != "allocated":
            terms = dataclasses.replace(terms, weights=terms.weights + cached[0], quantized=terms.quantized + cached[1])
        what = "model offload" if config.offload == "model" else f"{config.offload}: resident share of"
        how = f"{what} {name} with its activations {format_size(sum(w) * share[name] + acts.get(name, 0.0))}"
        if pinned != (0.0, 0.0):
            how += f", {format_size(sum(pinned))} of bitsandbytes 8-bit weights staying on the device"
        if cached != (0.0, 0.0) and metric != "allocated":
            how += f", {format_size(sum(cached))} of the load's blocks left reserved"
        phases[name] = (terms, how)
    peak = max(phases, key=lambda n: phases[n][0].total)
    return phases[peak]


def _share(model: ModelInfo, config: TrialConfig, name: str, shape: DenoiserShape) -> float:
    """Share of a component's weights on the device while it runs, placed as ``config.placement_of`` says."""
    placement = config.placement_of(name)
    if placement in ("resident", "model", "released"):
        return 1.0
    prefetch = 2 if config.use_stream and placement in GROUP_PLACEMENTS else 1
    if placement == "group_block" and name == model.denoiser:
        return min(1.0, prefetch * config.blocks_per_group / max(shape.num_blocks, 1))
    return LAYER_FRACTION * prefetch


def _lingering(config: TrialConfig, order: list[tuple[str, str]], running: str) -> list[str]:
    """Hooked components (model, released) still on the device while ``running`` runs: each stays from its
    own call until the component that moves it off starts (``calls.placement.placement_steps``)."""
    triggers = {s.component: s.trigger for s in placement_steps(config, order) if s.kind == "offload_when"}
    names = [n for n, _ in order]
    x, size = names.index(running), len(names)
    out = []
    for name in names:
        if name == running or config.placement_of(name) not in HOOKED_PLACEMENTS:
            continue
        h = names.index(name)
        if name not in triggers or (x - h) % size < (names.index(triggers[name]) - h) % size:
            out.append(name)
    return out


def _resident_per_component(
    model: ModelInfo,
    config: TrialConfig,
    weights: dict[str, tuple[float, float]],
    acts: dict[str, float],
    shape: DenoiserShape,
    metric: str,
    loading: dict[str, tuple[float, float]],
) -> tuple[MemoryTerms, str]:
    """The counted terms at the peak of a pipeline placed one component at a time: for each component's
    phase (encoding, denoising, decode), the resident components, its own share and activations, and the
    hooked components that have run and not yet been moved off; and the load phase."""
    order: list[tuple[str, str]] = sorted(
        ((c.name, c.role) for c in model.components), key=lambda c: RUN_ORDER.get(c[1], 1)
    )
    loaded = _loaded_on_device(model, config)
    resident = {n for n, _ in order if config.placement_of(n) == "resident"}
    # bitsandbytes 8-bit weights loaded on the device stay there, wherever their component is placed.
    always = resident | {n for n in loaded if config.backend_for(n) in STAYS_ON_DEVICE}
    load = _sum_weights(loading, loaded | resident)  # resident ones may be moved before the loaded ones leave
    phases = {"load": (_as_counted(load, 0.0, metric), f"load: {', '.join(sorted(loaded | resident))} on the device")}
    for name, _ in order:
        lingering = _lingering(config, order, name)
        others = _sum_weights(weights, (always | set(lingering)) - {name})
        share = 1.0 if name in always else _share(model, config, name, shape)
        own = weights[name]
        terms = _as_counted((others[0] + own[0] * share, others[1] + own[1] * share), acts.get(name, 0.0), metric)
        how = f"{name} {config.placement_of(name)} with its activations beside {format_size(sum(others))} on the device"
        if lingering:
            how += f" ({', '.join(lingering)} not yet moved off)"
        phases[name] = (terms, how)
    peak = max(phases, key=lambda n: phases[n][0].total)
    return phases[peak]


def _loaded_on_device(model: ModelInfo, config: TrialConfig) -> set[str]:
    """Components that ``from_pretrained`` puts on the device, whatever the later placement."""
    if quantizes_on_device(config):  # loaded with device_map=device: the whole pipeline
        return {c.name for c in model.components}
    return {c.name for c in model.components if config.backend_for(c.name) in LOADS_ON_DEVICE}


def _sum_weights(weights: dict[str, tuple[float, float]], names: set[str]) -> tuple[float, float]:
    return (sum(weights[n][0] for n in names if n in weights), sum(weights[n][1] for n in names if n in weights))


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
