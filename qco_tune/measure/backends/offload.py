"""Offloading: where a pipeline's weights live between uses."""

from __future__ import annotations

from typing import Any

from qco_tune.calls.placement import CPU_OFFLOAD_METHODS, group_offload_options
from qco_tune.core.config import TrialConfig


def apply_offload(pipe: Any, config: TrialConfig, device: str) -> None:
    """Place ``pipe`` on ``device`` as ``config.offload`` says.

    ``none`` moves the whole pipeline to ``device``; ``model`` and ``sequential`` use diffusers' CPU
    offload hooks; ``group_block``/``group_leaf`` apply group offloading to every torch module of
    the pipeline with the config's stream options. Offloading moves weights between host memory and
    a CUDA device, so any offload other than ``none`` on a non-CUDA device raises ``ValueError``.
    """
    config = config.canonical()  # drops stream options that mean nothing without use_stream
    if config.offload == "none":
        pipe.to(device)
        return
    if not str(device).startswith("cuda"):
        raise ValueError(
            f"offload={config.offload} needs a CUDA device: it moves weights between host memory and the GPU, "
            f"and on {device!r} the weights already live in host memory"
        )
    if config.offload in CPU_OFFLOAD_METHODS:
        getattr(pipe, CPU_OFFLOAD_METHODS[config.offload])(device=device)
    else:
        _group_offload(pipe, config, device)


def group_offload_kwargs(config: TrialConfig, device: str) -> dict[str, Any]:
    """Keyword arguments of ``enable_group_offload`` / ``apply_group_offloading`` for ``config``."""
    import torch

    return {
        "onload_device": torch.device(device),
        "offload_device": torch.device("cpu"),
        **group_offload_options(config),
    }


def _group_offload(pipe: Any, config: TrialConfig, device: str) -> None:
    """Group-offload each torch module: diffusers models through their own method, others through the hook.

    Done per component (rather than ``pipe.enable_group_offload``, which newer diffusers has) as the
    diffusers guide "Compiling and offloading quantized models" does, so older versions work too.
    """
    import torch
    from diffusers.hooks import apply_group_offloading

    kwargs = group_offload_kwargs(config, device)
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        model: Any = component  # nn.Module's __getattr__ would type the method as a Tensor
        if hasattr(model, "enable_group_offload"):  # diffusers models
            model.enable_group_offload(**kwargs)
        else:
            apply_group_offloading(component, **kwargs)
