"""The one code path that turns a loaded pipeline into a configured one (trials and ``qco_tune.apply``)."""

from __future__ import annotations

from typing import Any

from qco_tune.backends.compile import apply_compile
from qco_tune.backends.offload import apply_offload
from qco_tune.config import TrialConfig


def apply_config(pipe: Any, config: TrialConfig, device: str) -> Any:
    """Offload, then compile, ``pipe`` in place as ``config`` says; returns ``pipe``.

    Quantization is not applied here: it happens at load (``models.load_pipeline``). Offloading
    comes first so that compiled code sees the offloading hooks it will run with.
    """
    apply_offload(pipe, config, device)
    apply_compile(pipe, config)
    return pipe
