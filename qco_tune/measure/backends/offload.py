"""Offloading: where a pipeline's weights live between uses."""

from __future__ import annotations

from typing import Any

from qco_tune.calls.placement import CPU_OFFLOAD_METHODS, PlacementStep, group_offload_options, placement_steps
from qco_tune.core.config import TrialConfig


def apply_offload(pipe: Any, config: TrialConfig, device: str) -> None:
    """Place ``pipe`` on ``device`` as ``config.offload`` says.

    ``none`` moves the whole pipeline to ``device``; ``model`` and ``sequential`` use diffusers' CPU
    offload hooks; ``group_block``/``group_leaf`` apply group offloading to every torch module of
    the pipeline with the config's stream options. Offloading moves weights between host memory and
    a CUDA device, so any offload other than ``none`` on a non-CUDA device raises ``ValueError``.
    """
    config = config.canonical()  # drops stream options that mean nothing without use_stream
    if not config.is_offloaded:
        pipe.to(device)
        return
    if not str(device).startswith("cuda"):
        what = f"offload={config.offload}" if not config.placement else f"placement {config.describe()}"
        raise ValueError(
            f"{what} needs a CUDA device: it moves weights between host memory and the GPU, "
            f"and on {device!r} the weights already live in host memory"
        )
    if config.placement:
        place_components(pipe, placement_steps(config, module_roles(pipe)), config, device)
    elif config.offload in CPU_OFFLOAD_METHODS:
        getattr(pipe, CPU_OFFLOAD_METHODS[config.offload])(device=device)
    else:
        _group_offload(pipe, config, device)


def group_offload_kwargs(config: TrialConfig, device: str, placement: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``enable_group_offload`` / ``apply_group_offloading`` for ``config``."""
    import torch

    return {
        "onload_device": torch.device(device),
        "offload_device": torch.device("cpu"),
        **group_offload_options(config, placement),
    }


def module_roles(pipe: Any) -> list[tuple[str, str]]:
    """(name, role) of each torch module of ``pipe``, the roles as ``ModelInfo`` names them."""
    import torch

    from qco_tune.core.modelref import classify_component

    modules = {n: c for n, c in pipe.components.items() if isinstance(c, torch.nn.Module)}
    return [(n, classify_component(n, type(c).__name__)) for n, c in modules.items()]


def place_components(pipe: Any, steps: list[PlacementStep], config: TrialConfig, device: str) -> None:
    """Make ``steps`` (``calls.placement.placement_steps``) on ``pipe``: the same calls ``export`` writes.

    Takes any device: on the CPU the hooks run as well, moving nothing (tests).
    """
    import torch
    from accelerate import cpu_offload, cpu_offload_with_hook
    from diffusers.hooks import apply_group_offloading

    hooks: dict[str, Any] = {}
    for step in steps:
        module: Any = pipe.components[step.component]
        if step.kind == "resident":
            module.to(device)
        elif step.kind == "group":
            kwargs = group_offload_kwargs(config, device, step.placement)
            if hasattr(module, "enable_group_offload"):  # diffusers models
                module.enable_group_offload(**kwargs)
            else:
                apply_group_offloading(module, **kwargs)
        elif step.kind == "sequential":
            cpu_offload(module, device, offload_buffers=len(module._parameters) > 0)  # as diffusers does
        elif step.kind == "hook":
            _, hooks[step.component] = cpu_offload_with_hook(module, device)
        else:
            trigger: Any = pipe.components[step.trigger]
            if step.trigger_module:
                trigger = getattr(trigger, step.trigger_module)
            hook = hooks[step.component]
            trigger.register_forward_pre_hook(torch.compiler.disable(lambda _module, _args, hook=hook: hook.offload()))


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
