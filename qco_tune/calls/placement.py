"""Where the weights live and what is compiled, as calls: a configuration's offloading and torch.compile.

Stdlib only. ``measure.backends.offload`` and ``measure.backends.compile`` make these calls on a
loaded pipeline; ``export.plan`` writes the same calls, leaving out the arguments at diffusers'
defaults, so the snippet and the trial cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from qco_tune.core.config import TrialConfig
from qco_tune.core.placement import GROUP_PLACEMENTS, RUN_ORDER

STREAM_FLAGS = ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage")
"""Group offloading's stream options, each False by default in diffusers."""
CPU_OFFLOAD_METHODS = {"model": "enable_model_cpu_offload", "sequential": "enable_sequential_cpu_offload"}
"""The pipeline method of each CPU offload (called with ``device=``)."""


def group_offload_options(config: TrialConfig, placement: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``enable_group_offload`` / ``apply_group_offloading`` for ``config`` (for one
    component, ``placement``: group_block or group_leaf), but the two devices (``onload_device``,
    ``offload_device``: the caller's device and the CPU)."""
    leaf = (placement or config.offload) == "group_leaf"
    return {
        "offload_type": "leaf_level" if leaf else "block_level",
        "num_blocks_per_group": None if leaf else config.blocks_per_group,
        **{flag: getattr(config, flag) for flag in STREAM_FLAGS},
    }


def compile_call(config: TrialConfig) -> tuple[str, dict[str, Any]] | None:
    """The denoiser's method and its options: ``compile_repeated_blocks`` (regional) or ``compile`` (full),
    with ``mode`` and ``fullgraph``; None when nothing is compiled."""
    if config.compile == "none":
        return None
    method = "compile_repeated_blocks" if config.compile == "regional" else "compile"
    return method, {"mode": config.compile_mode, "fullgraph": config.fullgraph}


PLACING_ORDER = {"denoiser": 0, "vae": 1, "text_encoder": 2}
"""The order components are placed in: as the guide's Wan recipe and ``export.plan`` list them."""

StepKind = Literal["resident", "group", "sequential", "hook", "offload_when"]


@dataclass(frozen=True)
class PlacementStep:
    """One call of placing components one by one.

    ``resident``: ``component.to(device)``; ``group``: group offloading of the component (``placement``
    names the level); ``sequential``: accelerate's ``cpu_offload``; ``hook``: accelerate's
    ``cpu_offload_with_hook`` (the component moves to the device when it is called);
    ``offload_when``: a forward pre-hook on ``trigger`` (a component, or its ``.decoder`` for a VAE,
    whose ``decode`` is no ``forward``) that moves the hooked ``component`` back to the CPU.
    """

    kind: StepKind
    component: str
    role: str = ""
    placement: str = ""
    trigger: str = ""
    trigger_module: str = ""
    """The attribute of ``trigger`` whose forward starts it: empty for the component itself, or ``decoder``."""


def placement_steps(config: TrialConfig, components: Sequence[tuple[str, str]]) -> list[PlacementStep]:
    """The calls that place each of ``components`` ((name, role) of the pipeline's torch modules) as
    ``config.placement_of`` says, in the order the pipeline runs them.

    A ``model`` component leaves the device when the next component of the run (cyclically: the first
    one of the next call after the VAE) starts; a ``released`` text encoder when the denoiser starts.
    diffusers' ``enable_model_cpu_offload`` is not used for this: it moves every component, resident
    ones included, to the CPU and back at the end of each call (``maybe_free_model_hooks``).
    """
    ordered = sorted(components, key=lambda c: RUN_ORDER.get(c[1], 1))
    steps: list[PlacementStep] = []
    offloads: list[PlacementStep] = []
    denoiser = next((name for name, role in ordered if role == "denoiser"), None)
    for i, (name, role) in enumerate(ordered):
        placement = config.placement_of(name)
        if placement == "resident":
            steps.append(PlacementStep("resident", name, role))
        elif placement in GROUP_PLACEMENTS:
            steps.append(PlacementStep("group", name, role, placement))
        elif placement == "sequential":
            steps.append(PlacementStep("sequential", name, role))
        else:
            steps.append(PlacementStep("hook", name, role, placement))
            if placement == "released" and denoiser is not None:
                trigger, trigger_role = denoiser, "denoiser"
            else:
                trigger, trigger_role = ordered[(i + 1) % len(ordered)]
            if trigger != name:  # a pipeline of one hooked component keeps it once it ran
                module = "decoder" if trigger_role == "vae" else ""
                offloads.append(PlacementStep("offload_when", name, role, placement, trigger, module))
    # Placed as the guide places them (denoiser, VAE, text encoders); the hooks follow the run order.
    listed = {name: i for i, (name, _) in enumerate(components)}
    steps.sort(key=lambda s: (PLACING_ORDER.get(s.role, 3), listed[s.component]))
    return steps + offloads


__all__ = [
    "CPU_OFFLOAD_METHODS",
    "STREAM_FLAGS",
    "PlacementStep",
    "compile_call",
    "group_offload_options",
    "placement_steps",
]
