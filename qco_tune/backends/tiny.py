"""The ``tiny-flux`` preset: a random-weight FluxPipeline built locally, no hub access.

The components mirror FLUX.1's structure (a VAE with 16 latent channels and a scale factor of 8,
2x2 latent packing, guidance embedding, CLIP pooled + T5 sequence conditioning) at toy widths, so
the real ``from_pretrained`` and quantization code paths run in well under a second per call.
Tokenizers are word-level ``tokenizers`` models wrapped in ``PreTrainedTokenizerFast``.

Run ``python -m qco_tune.backends.tiny`` to print the per-component parameter counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

TINY_FLUX = "tiny-flux"
MARKER = ".qco-preset.json"
"""Written last into a materialised preset; its presence means the folder is complete."""
BUILDER_VERSION = 1
"""Bump when the tiny components change so stale caches are rebuilt."""

CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 64
VOCAB_SIZE = 1000
HIDDEN = 32  # CLIP hidden size = pooled_projection_dim; T5 d_model = joint_attention_dim
LATENT_CHANNELS = 16

# A small fixed vocabulary; words outside it map to the unknown token, which is fine for random weights.
_WORDS_TEXT = (
    "a an the of on in at with and or to from by for is are photo picture painting drawing image "
    "portrait close up wide shot astronaut riding horse moon cat dog bird fish tree forest mountain "
    "river sea ocean beach city street house car boat sky cloud sun star night day light dark red "
    "green blue yellow white black orange purple pink brown gray golden silver small large big tiny "
    "old young man woman child person people face eye hair hand flower garden field snow rain fire "
    "water stone wood glass metal robot castle bridge road window door table chair book cup apple "
    "squirrel eating burger high quality detailed realistic cinematic lighting style art oil watercolor "
    "digital sketch beautiful sunset sunrise bad blurry low resolution , . ! ? -"
)


def _word_vocab(specials: list[str]) -> dict[str, int]:
    """Specials first (their ids are fixed by the text encoder configs), then the words."""
    vocab = {tok: i for i, tok in enumerate(specials)}
    for word in _WORDS_TEXT.split():
        vocab.setdefault(word, len(vocab))
    return vocab


def _word_tokenizer(specials: list[str], unk: str, template: str, max_length: int, **tokens: str) -> Any:
    """A lowercase whitespace/punctuation word-level tokenizer with a post-processing template."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = _word_vocab(specials)
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials_in_template = [(t, vocab[t]) for t in specials if t in template.split()]
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials_in_template)
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, unk_token=unk, **tokens)


def build_clip_tokenizer() -> Any:
    """CLIP-like: ``<|startoftext|> words <|endoftext|>``, 77 tokens, ids matching the CLIP config."""
    specials = ["<|startoftext|>", "<pad>", "<|endoftext|>", "<unk>"]  # bos 0, pad 1, eos 2
    return _word_tokenizer(
        specials,
        "<unk>",
        "<|startoftext|> $A <|endoftext|>",
        CLIP_MAX_LENGTH,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
    )


def build_t5_tokenizer() -> Any:
    """T5-like: ``words </s>``, pad 0, eos 1."""
    specials = ["<pad>", "</s>", "<unk>"]
    return _word_tokenizer(specials, "<unk>", "$A </s>", T5_MAX_LENGTH, eos_token="</s>", pad_token="<pad>")


def build_tiny_flux() -> Any:
    """A FluxPipeline with seeded random weights in float32 (deterministic for a given library version)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,  # 2x2 packed latents, as in FLUX.1
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=HIDDEN,
        pooled_projection_dim=HIDDEN,
        guidance_embeds=True,  # like FLUX.1-dev: guidance_scale is an input of the denoiser
        axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=HIDDEN,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=VOCAB_SIZE,
            max_position_embeddings=CLIP_MAX_LENGTH,
            hidden_act="gelu",
            projection_dim=HIDDEN,
        )
    )
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=VOCAB_SIZE,
            d_model=HIDDEN,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",  # T5 v1.1, as FLUX.1 uses
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),  # four blocks: scale factor 8, as in FLUX.1
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        text_encoder=text_encoder,
        tokenizer=build_clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=build_t5_tokenizer(),
        transformer=transformer,
        vae=vae,
    )


def parameter_counts(pipe: Any) -> dict[str, tuple[str, int]]:
    """``{component: (class name, parameter count)}`` for every torch module of ``pipe``."""
    import torch

    return {
        name: (type(module).__name__, sum(p.numel() for p in module.parameters()))
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


_BUILDERS = {TINY_FLUX: build_tiny_flux}


def preset_names() -> tuple[str, ...]:
    """Presets this module can materialise."""
    return tuple(_BUILDERS)


def materialize_preset(name: str, cache_dir: str | os.PathLike[str]) -> Path:
    """The folder ``<cache_dir>/presets/<name>/`` holding a saved pipeline, built on first use.

    The pipeline is saved (safetensors) into a temporary sibling folder and renamed into place, so a
    reader never sees a partial checkpoint; concurrent builders race harmlessly (the loser's copy is
    discarded). A folder without the completion marker, or from an older builder, is rebuilt.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown preset {name!r}; buildable presets: {', '.join(_BUILDERS)}")
    root = Path(cache_dir) / "presets"
    final = root / name
    if _is_complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        pipe = _BUILDERS[name]()
        pipe.save_pretrained(tmp, safe_serialization=True)
        counts = {k: {"class": c, "params": n} for k, (c, n) in parameter_counts(pipe).items()}
        marker = {"preset": name, "builder_version": BUILDER_VERSION, "components": counts}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        _install(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _is_complete(folder: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker.get("builder_version") == BUILDER_VERSION)


def _install(tmp: Path, final: Path) -> None:
    """Move a finished build into place, replacing an incomplete or stale folder."""
    if final.exists() and not _is_complete(final):
        # Move the stale folder aside first so the rename below stays atomic.
        stale = final.with_name(f".{final.name}-stale-{uuid.uuid4().hex}")
        with contextlib.suppress(OSError):  # another process replaced it meanwhile
            final.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        if not _is_complete(final):  # a concurrent builder won only if its copy is complete
            raise


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
