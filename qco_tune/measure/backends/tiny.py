"""The ``tiny-flux`` preset, kept under its historical import path.

The tiny pipelines are presets like the full-size ones now: their configurations live in
``qco_tune.core.presets.tiny`` and every preset is built by ``qco_tune.measure.backends.presets_build`` and
materialised by ``qco_tune.measure.backends.materialize``. This module keeps the names that callers and
tests import (``materialize_preset(name, cache_dir) -> Path``, ``MARKER``, ``BUILDER_VERSION``...).

Run ``python -m qco_tune.measure.backends.tiny`` to print the per-component parameter counts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from qco_tune.core.presets import PRESETS
from qco_tune.core.presets.cache import BUILDER_VERSION, MARKER
from qco_tune.core.presets.tiny import (
    CLIP_MAX_LENGTH,
    CLIP_TOKENIZER,
    HIDDEN,
    LATENT_CHANNELS,
    T5_MAX_LENGTH,
    VOCAB_SIZE,
    t5_tokenizer,
)
from qco_tune.core.presets.tiny import TINY_FLUX as TINY_FLUX_BLUEPRINT
from qco_tune.measure.backends import materialize as _materialize
from qco_tune.measure.backends.presets_build import build_pipeline, build_tokenizer, parameter_counts

__all__ = [
    "BUILDER_VERSION",
    "CLIP_MAX_LENGTH",
    "HIDDEN",
    "LATENT_CHANNELS",
    "MARKER",
    "T5_MAX_LENGTH",
    "TINY_FLUX",
    "VOCAB_SIZE",
    "build_clip_tokenizer",
    "build_t5_tokenizer",
    "build_tiny_flux",
    "materialize_preset",
    "parameter_counts",
    "preset_names",
]

TINY_FLUX = "tiny-flux"


def build_clip_tokenizer() -> Any:
    """CLIP-like: ``<|startoftext|> words <|endoftext|>``, 77 tokens, ids matching the tiny CLIP config."""
    return build_tokenizer(CLIP_TOKENIZER)


def build_t5_tokenizer() -> Any:
    """T5-like: ``words </s>``, pad 0, eos 1."""
    return build_tokenizer(t5_tokenizer("tokenizer_2"))


def build_tiny_flux() -> Any:
    """A FluxPipeline with seeded random weights in float32 (deterministic for a given library version)."""
    return build_pipeline(TINY_FLUX_BLUEPRINT, "cpu", "float32")


def preset_names() -> tuple[str, ...]:
    """Presets that can be materialised (all of them)."""
    return tuple(PRESETS)


def materialize_preset(name: str, cache_dir: str | os.PathLike[str], device: str | None = None) -> Path:
    """The folder ``<cache_dir>/presets/<name>/`` holding the saved pipeline, built on first use.

    Unknown names raise ``ValueError`` (``UnknownPreset``) naming the closest preset.
    """
    return _materialize.materialize_preset(name, cache_dir, device).path


def main(argv: list[str] | None = None) -> int:
    """Print the tiny preset's per-component class names and parameter counts."""
    del argv
    counts = parameter_counts(build_tiny_flux())
    for comp, (cls, n) in counts.items():
        print(f"{comp:16s} {cls:28s} {n:>10,d}")
    print(f"{'total':16s} {'':28s} {sum(n for _, n in counts.values()):>10,d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
