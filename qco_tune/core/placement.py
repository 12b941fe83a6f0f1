"""Placement per component: where one component's weights live between uses.

Stdlib only. ``TrialConfig.offload`` is the pipeline-wide shorthand (every component placed alike, with
diffusers' pipeline methods); ``TrialConfig.placement`` overrides it for named components, which are
then placed one by one (``calls.placement.placement_steps``).
"""

from __future__ import annotations

from typing import Literal, get_args

Placement = Literal["resident", "model", "sequential", "group_block", "group_leaf", "released"]
"""``resident`` on the GPU; ``model`` CPU offload (on the GPU from its call until the next model-offloaded
component runs); ``sequential`` CPU offload (layer by layer); group offloading at block or leaf level
(the configuration's stream options); ``released`` (text encoders): on the GPU for encoding, moved to the
CPU when the denoiser starts."""

PLACEMENTS: tuple[str, ...] = get_args(Placement)

SHORTHAND_PLACEMENT: dict[str, str] = {
    "none": "resident",
    "model": "model",
    "sequential": "sequential",
    "group_block": "group_block",
    "group_leaf": "group_leaf",
}
"""What a pipeline-wide ``offload`` value means for each component."""

GROUP_PLACEMENTS = frozenset({"group_block", "group_leaf"})

HOOKED_PLACEMENTS = frozenset({"model", "released"})
"""Placements made with accelerate's ``cpu_offload_with_hook``, chained in the order the pipeline runs."""

CPU_OFFLOAD_PLACEMENTS = frozenset({"model", "released", "sequential"})
"""Placements made with accelerate's hooks (the CPU offloads), as opposed to diffusers' group offloading."""

RUN_ORDER = {"text_encoder": 0, "other": 1, "denoiser": 2, "vae": 3}
"""The order a pipeline call runs its components in, by role (as ``model_cpu_offload_seq`` lists them)."""
