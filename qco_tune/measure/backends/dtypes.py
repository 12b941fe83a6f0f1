"""torch dtypes from their names, as specs and presets write them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``torch.bfloat16`` from ``"bfloat16"`` (a ``torch.dtype`` passes through)."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    value = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"not a torch dtype: {name!r}")
    return value


__all__ = ["torch_dtype"]
