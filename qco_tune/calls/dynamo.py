"""Which ``torch._dynamo.config`` settings a configuration needs, and which denoiser is compiled.

Stdlib only: the exporter reuses it.
"""

from __future__ import annotations

from qco_tune.calls.backends import backends_of
from qco_tune.core.config import TrialConfig

DENOISER_NAMES = ("transformer", "unet")
"""The pipeline attributes ``measure.backends.compile`` compiles, in order of preference
(Wan 2.2 also has transformer_2)."""

BITSANDBYTES_BACKENDS = backends_of("bitsandbytes")

OFFLOAD_CACHE_SIZE_LIMIT = 1000
"""Offloading hooks move weights between devices, so dynamo sees new guards and recompiles often."""


def dynamo_settings(config: TrialConfig) -> dict[str, object]:
    """``{attribute of torch._dynamo.config: value}`` to set before compiling; empty when not compiling.

    - bitsandbytes layers produce data-dependent output shapes that dynamo must capture
      (``capture_dynamic_output_shape_ops``), as the diffusers bitsandbytes + compile docs do.
    - offloading plus compile recompiles per device placement; the default cache limit (8) would
      fall back to eager, so ``cache_size_limit`` is raised as the diffusers offloading guide does.
    """
    if config.compile == "none":
        return {}
    settings: dict[str, object] = {}
    if any(backend in BITSANDBYTES_BACKENDS for _, backend in config.quantization):
        settings["capture_dynamic_output_shape_ops"] = True
    if config.is_offloaded:
        settings["cache_size_limit"] = OFFLOAD_CACHE_SIZE_LIMIT
    return settings


INDUCTOR_PROFILES: dict[str, dict[str, object]] = {
    "default": {},
    "flux-fast": {
        "conv_1x1_as_mm": True,  # 1x1 convolutions as matrix multiplications
        "coordinate_descent_tuning": True,  # tune each kernel's block sizes by coordinate descent
        "coordinate_descent_check_all_directions": True,
        "epilogue_fusion": False,  # pointwise ops are not fused into the matmuls
    },
}
"""``torch._inductor.config`` values of each ``InductorProfile`` (flux-fast's ``optimize``: huggingface/flux-fast)."""


def inductor_settings(config: TrialConfig) -> dict[str, object]:
    """``{attribute of torch._inductor.config: value}`` to set before compiling; empty when not compiling."""
    if config.compile == "none":
        return {}
    return dict(INDUCTOR_PROFILES[config.inductor_profile])
