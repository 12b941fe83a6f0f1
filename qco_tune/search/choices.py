"""The choices per knob that a study's restriction allows for a model, before asking what the machine can run.

Stdlib only.
"""

from __future__ import annotations

from typing import Any

from qco_tune.core.config import (
    ATTENTION_BACKENDS,
    COMPILE_MODES,
    COMPILE_SCOPES,
    INDUCTOR_PROFILE_NAMES,
    LAYERWISE_CASTINGS,
    OFFLOAD_KINDS,
    QUANT_BACKENDS,
)
from qco_tune.core.errors import InputError
from qco_tune.core.records import ModelInfo
from qco_tune.core.studyspec import StudySpec
from qco_tune.search.availability import QUANTIZABLE_ROLES, STREAM_KNOBS, not_quantizable
from qco_tune.search.knob_checks import vae_of

DEFAULT_BLOCKS_PER_GROUP = (1, 2)
BOOLS = (False, True)


class SpaceError(InputError):
    """A study restriction that does not fit the model (e.g. quantizing a component it does not have)."""


def allowed_choices(spec: StudySpec, model: ModelInfo) -> dict[str, tuple[Any, ...]]:
    """Choices per knob that the study allows for this model, before asking what the machine can run."""
    r = spec.space
    backends = ("none", *(b for b in QUANT_BACKENDS if b != "none" and (not r.quantization or b in r.quantization)))
    allowed: dict[str, tuple[Any, ...]] = {f"quant.{c}": backends for c in _searched_components(spec, model)}
    allowed.update(
        {
            "compile": _restrict(COMPILE_SCOPES, r.compile),
            "compile_mode": _restrict(COMPILE_MODES, r.compile_modes),
            "fullgraph": _restrict(BOOLS, r.fullgraph),
            "offload": _restrict(OFFLOAD_KINDS, r.offload),
            **_placement_choices(spec, model),
            "blocks_per_group": tuple(r.blocks_per_group) or DEFAULT_BLOCKS_PER_GROUP,
            **{knob: BOOLS for knob in STREAM_KNOBS},
            "attention_backend": _restrict(ATTENTION_BACKENDS, r.attention_backends),
            "layerwise_casting": _restrict(LAYERWISE_CASTINGS, r.layerwise_casting),
            "vae_tiling": _restrict(BOOLS, r.vae_tiling),
            "vae_slicing": _restrict(BOOLS, r.vae_slicing) if r.vae_slicing else (False,),
            "vae_channels_last": _restrict(BOOLS, r.vae_channels_last),
            "tf32": _restrict(BOOLS, r.tf32) if r.tf32 or spec.dtype == "float32" else (False,),
            **_fast_path_choices(spec),
        }
    )
    return allowed


def _placement_choices(spec: StudySpec, model: ModelInfo) -> dict[str, tuple[str, ...]]:
    """``place.<component>`` → the placements searched for it: the study's list, else the text encoders
    resident or released. Raises ``SpaceError`` for a component the model lacks."""
    names = [c.name for c in model.components]
    listed: dict[str, list[str]] = {}
    for entry in spec.space.placement:
        component, _, placement = entry.partition(":")
        if component not in names:
            raise SpaceError(
                f"space.placement names {component!r}, which {model.reference} does not have "
                f"(components: {', '.join(names)})"
            )
        if placement == "released" and model.component(component).role != "text_encoder":
            raise SpaceError(f"space.placement: {component}:released: only text encoders are released after use")
        listed.setdefault(component, []).append(placement)
    if not listed:
        listed = {name: ["resident", "released"] for name in model.text_encoders}
    return {f"place.{c}": tuple(listed[c]) for c in names if c in listed}


def _fast_path_choices(spec: StudySpec) -> dict[str, tuple[Any, ...]]:
    r = spec.space
    return {
        "fuse_qkv": _restrict(BOOLS, r.fuse_qkv),
        "denoiser_channels_last": _restrict(BOOLS, r.denoiser_channels_last),
        "inductor_profile": _restrict(INDUCTOR_PROFILE_NAMES, r.inductor_profiles),
    }


def unsearched_settings(spec: StudySpec, model: ModelInfo) -> list[tuple[str, str]]:
    """Settings the study leaves out by default because they change nothing for it (listing them searches them)."""
    out = []
    if not spec.space.vae_slicing and vae_of(model) is not None:
        out.append(("vae_slicing", "not searched: slicing splits a batch, and a trial decodes one image per call"))
    if not spec.space.tf32 and spec.dtype != "float32":
        out.append(("tf32", f"not searched: TF32 changes float32 matmuls only, and the study runs in {spec.dtype}"))
    return out


def _restrict(everything: tuple[Any, ...], restriction: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v for v in everything if not restriction or v in restriction)


def _searched_components(spec: StudySpec, model: ModelInfo) -> tuple[str, ...]:
    names = {c.name: c for c in model.components}
    wanted = spec.space.quantize_components
    for name in wanted:
        if name not in names:
            raise SpaceError(
                f"space.quantize_components names {name!r}, which {model.reference} does not have "
                f"(components: {', '.join(names)})"
            )
        if names[name].role not in QUANTIZABLE_ROLES:
            raise SpaceError(f"space.quantize_components: {not_quantizable(names[name])}")
    return tuple(c.name for c in model.components if c.role in QUANTIZABLE_ROLES and (not wanted or c.name in wanted))
