"""Where a configuration's weights are at each phase of a trial: the device terms at the peak under offloading.

Stdlib only. Offloading none keeps everything resident; model offload one component at a time;
sequential and group offloading a few layers or blocks (twice that with a prefetch stream); a placement
per component phase by phase (encoding, denoising, decode) with the hooked components that have not yet
moved off; and the load phase, where a backend that quantizes on the GPU holds its components at once
(``search.memory`` adds the weights, activations and host terms these phases are made of).
"""

from __future__ import annotations

import dataclasses

from qco_tune.calls.backends import BACKEND_INFO
from qco_tune.calls.placement import placement_steps
from qco_tune.calls.quantconfigs import quantizes_on_device
from qco_tune.core.config import TrialConfig
from qco_tune.core.placement import GROUP_PLACEMENTS, HOOKED_PLACEMENTS, RUN_ORDER
from qco_tune.core.records import ModelInfo
from qco_tune.core.units import GIB, format_size
from qco_tune.search.memory_terms import MemoryTerms
from qco_tune.search.shapes import DenoiserShape

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


def _as_counted(resident: tuple[float, float], activations: float, metric: str) -> MemoryTerms:
    plain, quant = resident
    if metric == "allocated":
        return MemoryTerms(plain, quant, activations, 0.0)
    reserved = activations * ACTIVATION_RESERVED
    return MemoryTerms(plain, quant, reserved, CUDA_CONTEXT if metric == "device" else 0.0)


def resident_terms(
    model: ModelInfo,
    config: TrialConfig,
    weights: dict[str, tuple[float, float]],
    acts: dict[str, float],
    shape: DenoiserShape,
    metric: str,
    loading: dict[str, tuple[float, float]],
) -> tuple[MemoryTerms, str]:
    """The counted terms at the peak (the phase that needs most), and a short account of them; ``loading``: the
    weights at the load's peak (``memory._while_loading``)."""
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
        at_load = _as_counted(sum_weights(loading, set(loading)), 0.0, metric)
        if at_load.total > running.total:
            return at_load, f"load: {model.denoiser} unquantized and fused beside the rest {format_size(at_load.total)}"
        return running, how
    loaded = _loaded_on_device(model, config)
    load = sum_weights(loading, loaded)
    pinned = sum_weights(weights, {n for n in loaded if config.backend_for(n) in STAYS_ON_DEVICE})
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
    load = sum_weights(loading, loaded | resident)  # resident ones may be moved before the loaded ones leave
    phases = {"load": (_as_counted(load, 0.0, metric), f"load: {', '.join(sorted(loaded | resident))} on the device")}
    for name, _ in order:
        lingering = _lingering(config, order, name)
        others = sum_weights(weights, (always | set(lingering)) - {name})
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


def sum_weights(weights: dict[str, tuple[float, float]], names: set[str]) -> tuple[float, float]:
    return (sum(weights[n][0] for n in names if n in weights), sum(weights[n][1] for n in names if n in weights))
