"""The rules that make a combination invalid, each with the sentence ``qco-tune show`` reports.

Stdlib only. A rule reads the configuration and the ``SearchSpace`` (the machine, the model and the
study's restriction); those observed on a GPU say where and when. The rules of what the machine lacks
follow from the needs that decide availability (``availability.NEEDS``), one rule per need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qco_tune.calls.placement import placement_steps
from qco_tune.calls.quantconfigs import quantized_after_fusing
from qco_tune.core.config import CUDA_GRAPH_MODES, TrialConfig
from qco_tune.core.placement import CPU_OFFLOAD_PLACEMENTS, GROUP_PLACEMENTS
from qco_tune.core.records import ComponentInfo
from qco_tune.search.availability import (
    BACKEND_LIBRARY,
    BNB_BACKENDS,
    NEEDS,
    QUANTIZABLE_ROLES,
    QUANTO_BACKENDS,
    SETTINGS_KNOBS,
    Group,
    not_quantizable,
)

if TYPE_CHECKING:
    from qco_tune.search.space import SearchSpace


Key = Callable[[TrialConfig], Any]
BOTH: tuple[Group, ...] = ("quantization", "runtime")


@dataclass(frozen=True)
class Rule:
    """One reason a configuration cannot run: ``broken(config, space)`` → the sentence ``reason(config, space)``."""

    name: str
    broken: Callable[[TrialConfig, SearchSpace], bool]
    reason: Callable[[TrialConfig, SearchSpace], str]
    scope: Group | tuple[Group, ...] = "runtime"
    """The groups of knobs the predicate reads: quantization, runtime (compile, offload), settings."""

    @property
    def groups(self) -> frozenset[str]:
        return frozenset((self.scope,) if isinstance(self.scope, str) else self.scope)


def _need_rule(name: str) -> Rule:
    """The rule of a need of ``availability.NEEDS``: a configuration using a value that needs what is missing here."""
    need = next(n for n in NEEDS if n.name == name)
    return Rule(
        name,
        lambda c, s: need.refusal(c, s.env) is not None,
        lambda c, s: str(need.refusal(c, s.env)),
        need.group,
    )


# -- the rules ---------------------------------------------------------------------------------------------


def _backends(config: TrialConfig) -> set[str]:
    return {b for _, b in config.quantization}


def _components_not_in_model(config: TrialConfig, space: SearchSpace) -> list[str]:
    names = {c.name for c in space.model.components}
    return [c for c, _ in config.quantization if c not in names]


def _not_quantizable_components(config: TrialConfig, space: SearchSpace) -> list[ComponentInfo]:
    names = {c.name: c for c in space.model.components}
    return [names[c] for c, _ in config.quantization if c in names and names[c].role not in QUANTIZABLE_ROLES]


def _outside_quantization(config: TrialConfig, space: SearchSpace) -> list[str]:
    """Quantization in ``config`` that the study's restriction leaves out (other rules say what the machine lacks)."""
    allowed = space.allowed
    names = {comp.name: comp for comp in space.model.components}
    out = []
    for component, backend in config.quantization:
        knob = f"quant.{component}"
        if component not in names or names[component].role not in QUANTIZABLE_ROLES:
            continue  # said by their own rules
        if knob not in allowed:
            out.append(f"{component} is not among the quantized components")
        elif backend not in allowed[knob]:
            out.append(f"{backend} is not among the quantization backends")
    return out


def _outside_runtime(config: TrialConfig, space: SearchSpace) -> list[str]:
    """Compile and offload knobs in ``config`` that the study's restriction leaves out."""
    allowed = space.allowed
    canonical = config.canonical()
    params = canonical.to_params()
    names = {c.name for c in space.model.components}
    out = [
        f"{knob}={value} is not among {', '.join(map(str, allowed[knob]))}"
        for knob, value in params.items()
        if not knob.startswith(("quant.", "place.")) and knob not in SETTINGS_KNOBS and value not in allowed[knob]
    ]
    for component, placement in canonical.placement:
        knob = f"place.{component}"
        if component not in names:
            continue  # said by its own rule
        if canonical.offload != "none":
            out.append(f"placement per component is searched with offload none, and offload is {canonical.offload}")
        elif knob not in allowed:
            out.append(f"the placement of {component} is not searched")
        elif placement not in allowed[knob]:
            out.append(f"{knob}={placement} is not among {', '.join(allowed[knob])}")
    return list(dict.fromkeys(out))


def _outside_settings(config: TrialConfig, space: SearchSpace) -> list[str]:
    """Settings in ``config`` that the study's restriction (or its defaults) leaves out."""
    allowed = space.allowed
    return [
        f"{knob}={getattr(config, knob)} is not among {', '.join(map(str, allowed[knob]))}"
        for knob in SETTINGS_KNOBS
        if getattr(config, knob) not in allowed[knob]
    ]


def _group_knobs_set(config: TrialConfig) -> list[str]:
    return [k for k in ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage") if getattr(config, k)]


def _int8_offload_observed_to_run(config: TrialConfig, space: SearchSpace) -> bool:
    """bitsandbytes int8 under group offloading as observed to run: with a stream, and not at block
    level with an int8 denoiser (see the rule below)."""
    int8_denoiser = config.backend_for(space.model.denoiser) == "bnb_int8"
    return config.use_stream and not (config.placement_of(space.model.denoiser) == "group_block" and int8_denoiser)


def _placed(config: TrialConfig, placements: frozenset[str] | set[str], backends: frozenset[str] | set[str]) -> bool:
    """Some component quantized with one of ``backends`` is placed in one of ``placements``."""
    return any(b in backends and config.placement_of(c) in placements for c, b in config.quantization)


def _placements_not_in_model(config: TrialConfig, space: SearchSpace) -> list[str]:
    names = {c.name for c in space.model.components}
    return [c for c, _ in config.placement if c not in names]


def _released_not_text_encoders(config: TrialConfig, space: SearchSpace) -> list[str]:
    roles = {c.name: c.role for c in space.model.components}
    return [c for c, p in config.placement if p == "released" and c in roles and roles[c] != "text_encoder"]


def _hooked_beside_group(config: TrialConfig) -> bool:
    """Accelerate's CPU offload hooks on some component and group offloading on another."""
    placements = config.placements()
    return bool(placements & CPU_OFFLOAD_PLACEMENTS) and bool(placements & GROUP_PLACEMENTS)


def _denoiser_moves(config: TrialConfig, space: SearchSpace) -> bool:
    """The denoiser's weights move between calls, or a hook on it moves another component's."""
    return config.placement_of(space.model.denoiser) != "resident" or _denoiser_triggers_offload(config, space)


def _denoiser_triggers_offload(config: TrialConfig, space: SearchSpace) -> bool:
    """A forward pre-hook on the denoiser moves a component off the device (``calls.placement.placement_steps``)."""
    if not config.placement:
        return False  # diffusers' own model offload hooks the denoiser only when it is offloaded itself
    components = [(c.name, c.role) for c in space.model.components]
    steps = placement_steps(config, components)
    return any(s.kind == "offload_when" and s.trigger == space.model.denoiser for s in steps)


RULES: tuple[Rule, ...] = (
    Rule(
        "record_stream_without_stream",
        lambda c, s: c.record_stream and not c.use_stream,
        lambda c, s: "record_stream only applies when group offloading copies on a CUDA stream (use_stream)",
    ),
    Rule(
        "low_cpu_mem_usage_without_stream",
        lambda c, s: c.low_cpu_mem_usage and not c.use_stream,
        lambda c, s: "low_cpu_mem_usage only applies when group offloading copies on a CUDA stream (use_stream)",
    ),
    Rule(
        "group_knobs_without_group_offload",
        lambda c, s: not c.is_group_offload and bool(_group_knobs_set(c)),
        lambda c, s: f"{', '.join(_group_knobs_set(c))} only apply to group offloading, and offload is {c.offload}",
    ),
    Rule(
        "blocks_per_group_without_block_offload",
        lambda c, s: "group_block" not in c.placements() and c.blocks_per_group != 1,
        lambda c, s: f"blocks_per_group only applies to group_block offloading, and offload is {c.offload}",
    ),
    Rule(
        "compile_knobs_without_compile",
        lambda c, s: c.compile == "none" and (c.compile_mode != "default" or c.fullgraph),
        lambda c, s: "compile_mode and fullgraph only apply when compiling, and compile is none",
    ),
    Rule(
        "cuda_graphs_with_offload",
        lambda c, s: c.compile != "none" and c.compile_mode in CUDA_GRAPH_MODES and _denoiser_moves(c, s),
        lambda c, s: (
            f"compile mode {c.compile_mode} records CUDA graphs, which replay fixed device addresses, "
            + (
                f"and {c.offload} offloading moves the weights between calls"
                if not c.placement
                else f"and the denoiser's placement ({c.placement_of(s.model.denoiser)}, or a hook on it that moves "
                "another component) moves weights between calls"
            )
        ),
    ),
    Rule(
        "placement_component_not_in_model",
        lambda c, s: bool(_placements_not_in_model(c, s)),
        lambda c, s: (
            f"placement names {', '.join(_placements_not_in_model(c, s))}, which {s.model.reference} does not have "
            f"(it has {', '.join(x.name for x in s.model.components)})"
        ),
    ),
    Rule(
        "released_not_a_text_encoder",
        lambda c, s: bool(_released_not_text_encoders(c, s)),
        lambda c, s: (
            f"released after use applies to text encoders (they run once per call, before the denoiser), "
            f"and {', '.join(_released_not_text_encoders(c, s))} is not one"
        ),
    ),
    Rule(
        "cpu_offload_beside_group_offload",
        lambda c, s: _hooked_beside_group(c),
        # diffusers (0.42, pipeline_utils._maybe_raise_error_if_group_offload_active) refuses
        # enable_model_cpu_offload and enable_sequential_cpu_offload on a pipeline with a group-offloaded
        # component: "You are trying to apply model/sequential CPU offloading to a pipeline that contains
        # components with group offloading enabled. This is not supported." Placed one by one the calls do
        # not reach that check, but diffusers supports no such pipeline, so the pairing stays out.
        lambda c, s: (
            "diffusers does not support model or sequential CPU offloading in a pipeline that contains "
            "components with group offloading enabled"
        ),
    ),
    Rule(
        "fullgraph_with_offload_hook_on_denoiser",
        lambda c, s: c.compile == "full" and c.fullgraph and _denoiser_triggers_offload(c, s),
        # The pre-hook that moves a text encoder (or the previous component) off the device is wrapped in
        # torch.compiler.disable, a graph break that fullgraph forbids when the whole denoiser is compiled.
        lambda c, s: (
            "fullgraph compilation of the whole denoiser cannot trace the hook on it that moves another "
            "component off the device (torch.compiler.disable: a graph break)"
        ),
    ),
    Rule(
        "sequential_offload_with_bitsandbytes",
        lambda c, s: _placed(c, {"sequential"}, BNB_BACKENDS),
        # diffusers issue 10800: accelerate re-quantizes the already packed weights and fails with
        # "Blockwise quantization only supports 16/32-bit floats".
        lambda c, s: (
            "sequential CPU offload cannot move bitsandbytes weights (accelerate tries to quantize them again)"
        ),
        BOTH,
    ),
    Rule(
        "group_offload_with_bitsandbytes_int8",
        lambda c, s: _placed(c, GROUP_PLACEMENTS, {"bnb_int8"}) and not _int8_offload_observed_to_run(c, s),
        # Observed on an H100 (torch 2.11, diffusers 0.42.1, bitsandbytes 0.50.2, 2026-11-24; the tiny
        # FLUX preset, studies/results/rules_probe/): LLM.int8 weights under group offloading fail with
        # "ValueError: Expected a cuda device, but got: cpu" (int8 state is left on the CPU) without a
        # stream at either level, and at block level with an int8 denoiser even with a stream. With a
        # stream they ran at leaf level (denoiser, or denoiser and T5) and at block level (T5 alone).
        lambda c, s: (
            "group offloading leaves bitsandbytes int8 state on the CPU (fails: expected a cuda device) "
            + ("without use_stream" if not c.use_stream else "at block level with an int8 denoiser")
        ),
        BOTH,
    ),
    Rule(
        "group_offload_with_quanto",
        lambda c, s: _placed(c, GROUP_PLACEMENTS, QUANTO_BACKENDS),
        # Observed on an H100 (torch 2.11, diffusers 0.42.1, optimum-quanto 0.2.7, 2026-11-24): both
        # trials of a quanto int8 transformer under block-level group offloading failed with "Expected all
        # tensors to be on the same device, but got mat2 is on cpu" (quanto's weights were not onloaded).
        # quanto's int4 and float8 weights are the same kind of tensor subclass (tests/gpu/test_gpu_knobs.py
        # checks that they fail the same way).
        lambda c, s: "group offloading does not onload quanto weights (fails: mat2 is on cpu)",
        BOTH,
    ),
    Rule(
        "fullgraph_with_group_offload",
        lambda c, s: c.fullgraph and c.compile != "none" and c.placement_of(s.model.denoiser) in GROUP_PLACEMENTS,
        # Group offloading onloads each group in a hook that diffusers wraps in torch.compiler.disable:
        # a graph break, which fullgraph forbids. Observed on an H100 (torch 2.11, diffusers 0.42.1,
        # 2026-11-24): bf16 regional fullgraph compile with block-level group offload failed with
        # "torch._dynamo.exc.Unsupported: Skip inlining `torch.compiler.disable()`d function
        # ModuleGroup.onload_"; no fullgraph trial under group offloading has ever run to the end.
        lambda c, s: (
            "fullgraph compilation cannot trace group offloading's onload hooks (torch.compiler.disable: a graph break)"
        ),
    ),
    Rule(
        "sequential_offload_with_quanto",
        lambda c, s: _placed(c, {"sequential"}, QUANTO_BACKENDS),
        # diffusers issue 10526: accelerate cannot rebuild quanto's WeightQBytesTensor on the meta device.
        lambda c, s: "sequential CPU offload cannot move quanto weights (accelerate cannot rebuild its tensors)",
        BOTH,
    ),
    _need_rule("fp8_needs_compute_capability"),
    _need_rule("torchao_int4_needs_tinygemm"),
    _need_rule("backend_unusable_here"),
    _need_rule("bitsandbytes_needs_cuda"),
    _need_rule("offload_needs_cuda"),
    _need_rule("cuda_graphs_need_cuda"),
    _need_rule("compile_unavailable"),
    _need_rule("backend_not_installed"),
    Rule(
        "component_not_in_model",
        lambda c, s: bool(_components_not_in_model(c, s)),
        lambda c, s: (
            f"{s.model.reference} has no component {', '.join(_components_not_in_model(c, s))} "
            f"(it has {', '.join(x.name for x in s.model.components)})"
        ),
        "quantization",
    ),
    Rule(
        "component_not_quantizable",
        lambda c, s: bool(_not_quantizable_components(c, s)),
        lambda c, s: "; ".join(not_quantizable(x) for x in _not_quantizable_components(c, s)),
        "quantization",
    ),
    Rule(
        "quantization_outside_study_space",
        lambda c, s: bool(_outside_quantization(c, s)),
        lambda c, s: "outside the study's space: " + "; ".join(_outside_quantization(c, s)),
        "quantization",
    ),
    Rule(
        "runtime_outside_study_space",
        lambda c, s: bool(_outside_runtime(c, s)),
        lambda c, s: "outside the study's space: " + "; ".join(_outside_runtime(c, s)),
    ),
    Rule(
        "layerwise_casting_with_quantized_denoiser",
        lambda c, s: c.layerwise_casting != "none" and c.backend_for(s.model.denoiser) != "none",
        lambda c, s: (
            f"layerwise casting stores the denoiser's weights in {c.layerwise_casting} itself, and "
            f"{s.model.denoiser} is already quantized ({c.backend_for(s.model.denoiser)})"
        ),
        ("quantization", "settings"),
    ),
    _need_rule("setting_unavailable"),
    Rule(
        "settings_outside_study_space",
        lambda c, s: bool(_outside_settings(c, s)),
        lambda c, s: "outside the study's space: " + "; ".join(_outside_settings(c, s)),
        "settings",
    ),
)
"""Every rule a configuration can break, in the order their sentences are reported."""


def _fused_quantized_reason(config: TrialConfig, space: SearchSpace) -> str:
    backend = config.backend_for(space.model.denoiser)
    why = FUSED_QKV_QUANTIZED.get(BACKEND_LIBRARY.get(backend, ""), "")
    return f"fused QKV projections concatenate the unquantized weights, and {space.model.denoiser} is {backend}: {why}"


def _fused_after_loading_quantized(config: TrialConfig, space: SearchSpace) -> bool:
    """Fusing a denoiser quantized at load: torchao denoisers are quantized after fusing instead (flux-fast's order)."""
    denoiser = space.model.denoiser
    return config.fuse_qkv and config.backend_for(denoiser) != "none" and not quantized_after_fusing(config, denoiser)


FUSED_QKV_QUANTIZED = {
    # Checked on the CPU (diffusers 0.42.1, optimum-quanto 0.2.7) on a tiny FLUX transformer
    # (tests/backends/test_fast_path_cpu.py keeps checking it).
    "quanto": "torch.cat of quanto's weights dequantizes them, so the fused projection is an unquantized nn.Linear",
    # fuse_projections concatenates weight.data, which bitsandbytes packs (4-bit pairs in uint8, int8 in CB);
    # bitsandbytes needs CUDA, so tests/gpu/test_gpu_knobs.py checks that it still fails.
    "bitsandbytes": "bitsandbytes packs its weights, and fusing would build an nn.Linear of the packed bytes",
}
"""Why fusing after a denoiser is quantized at load fails, per library. torchao is not here: its denoiser loads
unquantized, is fused, then quantized with torchao's ``quantize_`` (huggingface/flux-fast's order), whereas fusing
a torchao model quantized at load fails (int8 tensors do not implement aten.cat; float8 ones do not copy into
the fused nn.Linear)."""


FAST_PATH_RULES: tuple[Rule, ...] = (
    Rule(
        "fused_qkv_with_quantized_denoiser",
        _fused_after_loading_quantized,
        _fused_quantized_reason,
        ("quantization", "settings"),
    ),
    Rule(
        "inductor_profile_without_compile",
        lambda c, s: c.inductor_profile != "default" and c.compile == "none",
        lambda c, s: f"the Inductor profile {c.inductor_profile} sets flags of the compiler, and compile is none",
        ("runtime", "settings"),
    ),
)
"""The rules of the fast-path knobs (fused QKV, channels-last denoiser, Inductor profile)."""

RULES = RULES + FAST_PATH_RULES

if {n.name for n in NEEDS if n.ruled} - {r.name for r in RULES}:  # pragma: no cover - a programming error
    raise ImportError("a need of availability.NEEDS has no rule in RULES")
