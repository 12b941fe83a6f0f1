"""Build a preset's pipeline from its ``Blueprint``: random weights, local tokenizers, no hub access.

Model components are instantiated by their own library (``FluxTransformer2DModel(**config)``,
``T5EncoderModel(T5Config(**config))``), so their weights come from that library's initialisation,
seeded per component. On a GPU they are created there directly, in the target dtype (``torch.device``
plus the default dtype): a 12-billion-parameter transformer takes about a second. On the ``meta``
device nothing is allocated, which counts parameters of the full-size presets on any machine.

Tokenizers are word-level ``tokenizers`` models wrapped in ``PreTrainedTokenizerFast``: the real
vocabulary size (the specials at their real ids, a few hundred common words, then synthetic
tokens) and the real maximum length, which is what the text encoders' cost depends on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from qco_tune.core.presets.blueprint import Blueprint, ModelPart, SchedulerPart, TokenizerPart

if TYPE_CHECKING:
    import torch

__all__ = [
    "build_model",
    "build_pipeline",
    "build_scheduler",
    "build_tokenizer",
    "count_parameters",
    "default_device",
    "parameter_counts",
]

# A small fixed vocabulary of prompt words, so that prompts tokenise to distinct ids rather than all
# to the unknown token (for random weights the words themselves do not matter).
WORDS = (  # noqa: SIM905 (a sentence reads better than 130 quoted words)
    "a an the of on in at with and or to from by for is are photo picture painting drawing image "
    "portrait close up wide shot astronaut riding horse moon cat dog bird fish tree forest mountain "
    "river sea ocean beach city street house car boat sky cloud sun star night day light dark red "
    "green blue yellow white black orange purple pink brown gray golden silver small large big tiny "
    "old young man woman child person people face eye hair hand flower garden field snow rain fire "
    "water stone wood glass metal robot castle bridge road window door table chair book cup apple "
    "squirrel eating burger high quality detailed realistic cinematic lighting style art oil watercolor "
    "digital sketch beautiful sunset sunrise bad blurry low resolution , . ! ? -"
).split()


def default_device() -> str:
    """``cuda`` where torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def _creating_on(device: str | torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Tensors created inside are created on ``device`` in ``dtype`` (floating point ones)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_model(part: ModelPart, device: str | torch.device = "cpu", dtype: Any = None, seed: int = 0) -> Any:
    """One model component with seeded random weights, created on ``device`` in ``dtype`` (default float32)."""
    import torch

    from qco_tune.measure.backends.dtypes import torch_dtype

    target = torch_dtype(dtype) if dtype is not None else torch.float32
    config = _plain(part.config)
    torch.manual_seed(seed)
    with _creating_on(device, target):
        if part.library == "diffusers":
            import diffusers

            model = getattr(diffusers, part.class_name)(**config)
        else:
            import transformers

            assert part.config_class is not None, f"{part.name}: a transformers model needs its config class"
            model = getattr(transformers, part.class_name)(getattr(transformers, part.config_class)(**config))
    return model.eval()


def _plain(config: Any) -> dict[str, Any]:
    """Tuples to lists, as config.json files hold them (diffusers registers the values as given)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(config).items()}


def build_tokenizer(part: TokenizerPart) -> Any:
    """A word-level tokenizer with ``part``'s vocabulary size, specials, template and maximum length."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = _vocabulary(part)
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=part.unk_token))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    in_template = [(t, vocab[t]) for t, _ in part.specials if t in part.template.split()]
    tok.post_processor = processors.TemplateProcessing(single=part.template, special_tokens=in_template)
    roles = {"bos_token": part.bos_token, "eos_token": part.eos_token, "pad_token": part.pad_token}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=part.max_length,
        unk_token=part.unk_token,
        **{k: v for k, v in roles.items() if v is not None},
    )


def _vocabulary(part: TokenizerPart) -> dict[str, int]:
    """Specials at their ids; words, then ``<tN>`` tokens, in the free ids below ``vocab_size``."""
    vocab = dict(part.specials)
    if len(set(vocab.values())) != len(vocab) or max(vocab.values()) >= part.vocab_size:
        raise ValueError(f"{part.name}: special token ids must be distinct and below {part.vocab_size}")
    taken = set(vocab.values())
    free = (i for i in range(part.vocab_size) if i not in taken)
    for word in WORDS:
        if word not in vocab:
            vocab[word] = next(free)
    for index in free:
        vocab[f"<t{index}>"] = index
    return vocab


def build_scheduler(part: SchedulerPart) -> Any:
    import diffusers

    return getattr(diffusers, part.class_name)(**_plain(part.config))


def build_pipeline(
    blueprint: Blueprint, device: str | torch.device = "cpu", dtype: Any = None, models: dict[str, Any] | None = None
) -> Any:
    """The whole pipeline; ``models`` (name → module) replaces building those components.

    Components are created one after the other, each after ``torch.manual_seed(blueprint.seed)``,
    so a preset built twice on one device type with one library version has the same weights.
    """
    import diffusers

    given = dict(models or {})
    parts: dict[str, Any] = {
        m.name: given[m.name] if m.name in given else build_model(m, device, dtype, blueprint.seed)
        for m in blueprint.models
    }
    parts.update({t.name: build_tokenizer(t) for t in blueprint.tokenizers})
    parts.update({s.name: build_scheduler(s) for s in blueprint.schedulers})
    return getattr(diffusers, blueprint.pipeline_class)(**parts, **dict(blueprint.pipeline_kwargs))


def parameter_counts(pipe: Any) -> dict[str, tuple[str, int]]:
    """``{component: (class name, parameter count)}`` for every torch module of ``pipe``."""
    import torch

    return {
        name: (type(module).__name__, sum(p.numel() for p in module.parameters()))
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


def count_parameters(blueprint: Blueprint) -> dict[str, tuple[str, int]]:
    """``{component: (class name, parameters)}`` of a blueprint's models, built on the meta device."""
    counts = {}
    for part in blueprint.models:
        model = build_model(part, "meta", blueprint.save_dtype)
        counts[part.name] = (type(model).__name__, sum(p.numel() for p in model.parameters()))
        del model
    return counts
