"""What a random-weight preset is made of, as plain data: component classes, configs, tokenizers, schedulers.

Stdlib only. ``qco_tune.measure.backends.presets_build`` turns a ``Blueprint`` into a diffusers pipeline
(weights drawn by each library's own initialisation, tokenizers built locally), so the numbers
here are the single source of a preset's architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Library = Literal["diffusers", "transformers"]


@dataclass(frozen=True)
class ModelPart:
    """A pipeline component with weights: built as ``class_name(**config)`` (diffusers) or
    ``class_name(config_class(**config))`` (transformers)."""

    name: str
    """Attribute of the pipeline (``transformer``, ``text_encoder_2``...)."""
    library: Library
    class_name: str
    config: Mapping[str, Any] = field(hash=False)
    config_class: str | None = None
    """The transformers configuration class (``T5Config``); None for diffusers models."""
    source: str = ""
    """Where the numbers come from (a public config file)."""


@dataclass(frozen=True)
class TokenizerPart:
    """A word-level tokenizer built locally: the real vocabulary size and maximum length, synthetic tokens.

    Token ids and sequence lengths are what cost compute; the words themselves do not matter for
    random weights. ``specials`` fix the ids the text encoder's config expects; a few hundred
    common words follow, then synthetic tokens up to ``vocab_size``.
    """

    name: str
    vocab_size: int
    max_length: int
    specials: tuple[tuple[str, int], ...]
    """(token, id) pairs; ids must be below ``vocab_size``."""
    template: str
    """Post-processing template, e.g. ``"<|startoftext|> $A <|endoftext|>"`` or ``"$A </s>"``."""
    unk_token: str
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    source: str = ""


@dataclass(frozen=True)
class SchedulerPart:
    """A scheduler: ``class_name(**config)`` (diffusers)."""

    name: str
    class_name: str
    config: Mapping[str, Any] = field(hash=False)
    source: str = ""


@dataclass(frozen=True)
class Blueprint:
    """Everything needed to build a preset's pipeline with random weights."""

    pipeline_class: str
    models: tuple[ModelPart, ...]
    tokenizers: tuple[TokenizerPart, ...]
    schedulers: tuple[SchedulerPart, ...]
    save_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """The dtype of the materialised safetensors (trials load in the study's dtype)."""
    seed: int = 0
    """Each model component is built after ``torch.manual_seed(seed)``."""
    pipeline_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Further constructor arguments of the pipeline (e.g. ``transformer_2=None``)."""

    def model(self, name: str) -> ModelPart:
        return next(m for m in self.models if m.name == name)
