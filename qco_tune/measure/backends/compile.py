"""torch.compile of a pipeline's denoiser, regional (repeated blocks) or whole."""

from __future__ import annotations

from typing import Any

from qco_tune.calls.dynamo import DENOISER_NAMES, dynamo_settings, inductor_settings
from qco_tune.calls.placement import compile_call
from qco_tune.core.config import TrialConfig


def find_denoiser(pipe: Any) -> str:
    """The attribute name of ``pipe``'s denoiser (``transformer`` or ``unet``)."""
    for name in DENOISER_NAMES:
        if getattr(pipe, name, None) is not None:
            return name
    raise ValueError(f"{type(pipe).__name__} has no denoiser named {' or '.join(DENOISER_NAMES)}")


def apply_dynamo_settings(config: TrialConfig) -> dict[str, object]:
    """Set the ``torch._dynamo.config`` values ``config`` needs (process-wide); returns what was set."""
    settings = dynamo_settings(config)
    if settings:
        import torch._dynamo

        for key, value in settings.items():
            setattr(torch._dynamo.config, key, value)
    return settings


def apply_inductor_settings(config: TrialConfig) -> dict[str, object]:
    """Set the ``torch._inductor.config`` values of ``config``'s Inductor profile (process-wide); returns them."""
    settings = inductor_settings(config)
    if settings:
        import torch._inductor.config

        for key, value in settings.items():
            setattr(torch._inductor.config, key, value)
    return settings


def apply_compile(pipe: Any, config: TrialConfig, denoiser: str | None = None) -> None:
    """Compile ``pipe``'s denoiser as ``config.compile`` says; dynamo settings are applied first.

    ``regional`` calls ``compile_repeated_blocks`` (the model must declare ``_repeated_blocks``),
    ``full`` calls the module's ``compile``; both pass ``mode`` and ``fullgraph``. Compilation is
    lazy: the cost shows in the first pipeline call. Raises ``ValueError`` when the denoiser cannot
    be compiled regionally.
    """
    call = compile_call(config)
    if call is None:
        return
    name = denoiser or find_denoiser(pipe)
    module = getattr(pipe, name)
    if config.compile == "regional" and not getattr(module, "_repeated_blocks", None):
        raise ValueError(f"compile=regional: {type(module).__name__} declares no repeated blocks; use compile=full")
    apply_dynamo_settings(config)
    apply_inductor_settings(config)
    method, options = call
    getattr(module, method)(**options)
