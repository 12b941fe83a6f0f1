"""Where the weights live and what is compiled, as calls: a configuration's offloading and torch.compile.

Stdlib only. ``measure.backends.offload`` and ``measure.backends.compile`` make these calls on a
loaded pipeline; ``export.plan`` writes the same calls, leaving out the arguments at diffusers'
defaults, so the snippet and the trial cannot disagree.
"""

from __future__ import annotations

from typing import Any

from qco_tune.core.config import TrialConfig

STREAM_FLAGS = ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage")
"""Group offloading's stream options, each False by default in diffusers."""
CPU_OFFLOAD_METHODS = {"model": "enable_model_cpu_offload", "sequential": "enable_sequential_cpu_offload"}
"""The pipeline method of each CPU offload (called with ``device=``)."""


def group_offload_options(config: TrialConfig) -> dict[str, Any]:
    """Keyword arguments of ``enable_group_offload`` / ``apply_group_offloading`` for ``config``, but the
    two devices (``onload_device``, ``offload_device``: the caller's device and the CPU)."""
    leaf = config.offload == "group_leaf"
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


__all__ = ["CPU_OFFLOAD_METHODS", "STREAM_FLAGS", "compile_call", "group_offload_options"]
