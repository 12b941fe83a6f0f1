"""qco-tune: tune quantization, torch.compile and offloading of diffusers pipelines under a VRAM budget.

Library use::

    import qco_tune

    pipeline = qco_tune.from_pretrained("black-forest-labs/FLUX.1-dev", "tuned.json")
    # or, for a pipeline already loaded (quantization must have happened at load time):
    qco_tune.apply(pipeline, "tuned.json")

``apply``, ``from_pretrained`` and ``load_config`` are imported on first use, so ``import qco_tune``
stays free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "apply", "from_pretrained", "load_config"]

if TYPE_CHECKING:
    from qco_tune.api import apply, from_pretrained
    from qco_tune.export.formats import load_config

_LAZY = {"apply": "qco_tune.api", "from_pretrained": "qco_tune.api", "load_config": "qco_tune.export.formats"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qco_tune' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
