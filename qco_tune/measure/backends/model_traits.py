"""What each model class of a pipeline folder offers for the knobs, without its weights.

``python -m qco_tune.measure.backends.model_traits FOLDER`` prints one JSON line ``{component: [trait, ...]}``
(``qco_tune.core.records.COMPONENT_TRAITS``) for the diffusers models that ``FOLDER/model_index.json``
lists. Each model is built from its ``config.json`` with empty (meta) weights, so the answer is the
installed diffusers' own: the class's ``_repeated_blocks``, the attention processors it sets up, and
whether its VAE code implements tiling and slicing. Run in a child process: the parent imports no torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from qco_tune.core.records import (
    TRAIT_ATTENTION_DISPATCH,
    TRAIT_CONV3D,
    TRAIT_FUSED_QKV,
    TRAIT_REPEATED_BLOCKS,
    TRAIT_SLICING,
    TRAIT_TILING,
)


def folder_traits(folder: Path) -> dict[str, list[str]]:
    """{component: traits} for each diffusers model of the pipeline folder whose class this diffusers has."""
    index = json.loads((folder / "model_index.json").read_text())
    found = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] != "diffusers":
            continue  # transformers' text encoders: no knob depends on their class
        try:
            model = _empty_model(str(value[1]), folder / name)
        except Exception:  # a config this diffusers cannot build: left uninspected, as before traits existed
            continue
        if model is not None:
            found[name] = model_traits(model)
    return found


def _empty_model(class_name: str, component: Path) -> Any:
    """``class_name`` built from the component's config with meta weights, or None if it is not a diffusers model."""
    import diffusers
    from accelerate import init_empty_weights

    cls = getattr(diffusers, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        return None
    with init_empty_weights():
        return cls.from_config(cls.load_config(component))


def model_traits(model: Any) -> list[str]:
    """The traits of one diffusers model instance (its weights may be empty)."""
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention, MochiAttention

    traits = []
    if getattr(model, "_repeated_blocks", None):
        traits.append(TRAIT_REPEATED_BLOCKS)
    # What ModelMixin.set_attention_backend changes: processors of these modules with an ``_attention_backend``.
    attention = (Attention, MochiAttention, AttentionModuleMixin)
    modules = [m for m in model.modules() if isinstance(m, attention)]
    if any(hasattr(getattr(m, "processor", None), "_attention_backend") for m in modules):
        traits.append(TRAIT_ATTENTION_DISPATCH)
    if hasattr(model, "use_tiling") and callable(getattr(model, "enable_tiling", None)):
        traits.append(TRAIT_TILING)
    if hasattr(model, "use_slicing") and callable(getattr(model, "enable_slicing", None)):
        traits.append(TRAIT_SLICING)
    return traits + _fast_path_traits(model)


FUSED_PROJECTIONS = ("to_qkv", "to_kv", "to_added_qkv")
"""The modules diffusers' ``fuse_projections`` adds beside the unfused ones."""


def _fast_path_traits(model: Any) -> list[str]:
    """Whether fusing QKV projections fuses anything (tried on a copy: the model is left as it was), and
    whether 5D weights refuse channels-last."""
    import copy

    import torch

    traits = []
    if callable(getattr(model, "fuse_qkv_projections", None)):
        trial = copy.deepcopy(model) if _is_meta(model) else None
        try:
            if trial is not None:
                with torch.no_grad():
                    trial.fuse_qkv_projections()
        except Exception:  # e.g. "not supported for models having added KV projections"
            trial = None
        if trial is not None and any(hasattr(m, name) for m in trial.modules() for name in FUSED_PROJECTIONS):
            traits.append(TRAIT_FUSED_QKV)
    if any(p.dim() == 5 for p in model.parameters()):
        traits.append(TRAIT_CONV3D)
    return traits


def _is_meta(model: Any) -> bool:
    """A model with empty weights, cheap to copy (traits are read from such models only)."""
    return all(p.device.type == "meta" for p in model.parameters())


def main(argv: list[str]) -> int:
    from qco_tune.measure.backends.libraries import quiet_libraries

    quiet_libraries()
    print(json.dumps(folder_traits(Path(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
