"""The recipes of the diffusers guide "Compiling and offloading quantized models", seeded as a study's first trials.

When they are measured: the ones that keep every weight on the device first. An offloading recipe is
slower than the same recipe resident (it only adds transfers), so while a resident recipe is predicted to
fit the budget, measuring the offloading ones first spends the start of a study (minutes each at full
size: the FLUX.1-dev group-offload recipe took 286 s on an H200, ``studies/results/flux-dev-24gib/``) on
configurations that cannot be the fastest feasible one. They are held back until the plan has nothing
else to propose, or until the trials left are just enough for them. When no resident recipe fits, they
are the study's feasible baselines and come first.

Stdlib only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from qco_tune.core.config import QuantBackend, TrialConfig
from qco_tune.core.placement import Placement

if TYPE_CHECKING:
    from qco_tune.search.space import SearchSpace


# The guide's quantization recipe uses bitsandbytes NF4; where that cannot run, the first of these that can.
RECIPE_BACKENDS: tuple[QuantBackend, ...] = ("bnb_nf4", "torchao_int8wo", "quanto_int8")


def guide_recipes(space: SearchSpace) -> list[tuple[str, TrialConfig]]:
    """The recipes of the diffusers guide "Compiling and offloading quantized models" that fit here.

    In order: the unoptimised reference, quantization, quantization + compile (max-autotune,
    fullgraph), + model CPU offload (default mode), and quantization + group offload (leaf level,
    stream, non-blocking; compiled as in the guide's Wan example, and placed as it places the
    components of a video pipeline: ``_group_offload_recipe``). A recipe that breaks a rule or
    leaves the study's space is dropped, never altered; only the quantization backend falls back
    from bitsandbytes NF4 to the first of torchao int8 weight-only and quanto int8 that runs here,
    and the label names it.
    """
    recipes: list[tuple[str, TrialConfig]] = [("reference", TrialConfig())]
    backend = _recipe_backend(space)
    targets = _recipe_components(space)
    if backend is not None and targets:
        suffix = "" if backend == "bnb_nf4" else f" ({backend})"
        quant: tuple[tuple[str, QuantBackend], ...] = tuple((c, backend) for c in targets)
        recipes += [
            (f"quantization{suffix}", TrialConfig(quantization=quant)),
            (
                f"quantization + compile{suffix}",
                TrialConfig(quantization=quant, compile="full", compile_mode="max-autotune", fullgraph=True),
            ),
            (
                f"quantization + compile + model offload{suffix}",
                TrialConfig(quantization=quant, compile="full", offload="model"),
            ),
            (f"quantization + group offload{suffix}", _group_offload_recipe(space, quant)),
        ]
    kept: list[tuple[str, TrialConfig]] = []
    seen: set[str] = set()
    for label, config in recipes:
        if config.key() not in seen and not space.violations(config):
            seen.add(config.key())
            kept.append((label, config))
    return kept


def _group_offload_recipe(space: SearchSpace, quant: tuple[tuple[str, QuantBackend], ...]) -> TrialConfig:
    """The guide's Wan2.1 recipe: the transformer, the VAE and the text encoder group-offloaded one by one
    at leaf level with a stream, non-blocking, and the transformer compiled. For a video pipeline it is
    written per component as the guide writes it (each denoiser, the VAE, each text encoder), folded
    into the pipeline-wide shorthand where that names the same components (``shorthand``)."""
    recipe = TrialConfig(quantization=quant, compile="full", use_stream=True, non_blocking=True)
    if not space.model.is_video:
        return dataclasses.replace(recipe, offload="group_leaf")
    roles = ("denoiser", "vae", "text_encoder")
    placement: tuple[tuple[str, Placement], ...] = tuple(
        (c.name, "group_leaf") for c in space.model.components if c.role in roles
    )
    return space.shorthand(dataclasses.replace(recipe, placement=placement))


def _recipe_backend(space: SearchSpace) -> QuantBackend | None:
    denoiser = space.knobs().get(f"quant.{space.model.denoiser}", ())
    return next((b for b in RECIPE_BACKENDS if b in denoiser), None)


def _recipe_components(space: SearchSpace) -> tuple[str, ...]:
    """The denoiser and the T5-family text encoder, as the guide quantizes them (Flux's
    ``text_encoder_2``, Wan's UMT5 ``text_encoder``); without a T5 encoder, the largest one."""
    encoders = [space.model.component(n) for n in space.model.text_encoders]
    t5 = [c for c in encoders if "T5" in c.class_name]
    # On a tie the later encoder: FLUX lists CLIP before T5.
    largest = max(reversed(t5 or encoders), key=lambda c: c.params or 0, default=None)
    if space.model.denoiser not in space.components:
        return ()  # the recipes are about the denoiser first
    wanted = [space.model.denoiser] + ([largest.name] if largest else [])
    return tuple(c for c in wanted if c in space.components)


Recipe = tuple[str, TrialConfig]


def recipes_to_hold(recipes: Sequence[Recipe], fits: Callable[[TrialConfig], bool]) -> list[Recipe]:
    """The recipes a new study does not queue at once: the offloading ones, when a recipe that offloads
    nothing (the reference aside: it is measurement, not a candidate) is predicted to fit."""
    resident = [config for name, config in recipes[1:] if not config.is_offloaded]
    if not any(fits(config) for config in resident):
        return []
    return [(name, config) for name, config in recipes[1:] if config.is_offloaded]


def held_recipes_due(held: int, waiting: int, counted: int, target: int | None) -> bool:
    """Whether the held recipes are queued now: nothing else is queued (the plan has nothing left), or
    the trials left before ``target`` are just enough for them and what is queued."""
    if held == 0:
        return False
    return waiting == 0 or (target is not None and counted + waiting + held >= target)
