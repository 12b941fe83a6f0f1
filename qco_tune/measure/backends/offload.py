"""Offloading: where a pipeline's weights live between uses."""

from __future__ import annotations

from typing import Any

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
    if config.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif config.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        _group_offload(pipe, config, device)


def group_offload_kwargs(config: TrialConfig, device: str) -> dict[str, Any]:
    """Keyword arguments of ``enable_group_offload`` / ``apply_group_offloading`` for ``config``."""
    import torch

    leaf = config.offload == "group_leaf"
    return {
        "onload_device": torch.device(device),
        "offload_device": torch.device("cpu"),
        "offload_type": "leaf_level" if leaf else "block_level",
        "num_blocks_per_group": None if leaf else config.blocks_per_group,
        "use_stream": config.use_stream,
        "non_blocking": config.non_blocking,
        "record_stream": config.record_stream,
        "low_cpu_mem_usage": config.low_cpu_mem_usage,
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
