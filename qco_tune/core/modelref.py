"""Resolve what a user wrote as ``model`` into a ``ModelInfo``, without torch and without the network.

A reference is one of:

- a preset name (``tiny-flux``, ``flux.1-dev``...): random weights, metadata from ``qco_tune.core.presets``;
- a local diffusers pipeline folder (one with ``model_index.json``);
- a Hugging Face hub id (``org/name``) already in the local Hugging Face cache, at ``main`` or at the
  ``revision`` given (a branch, tag or commit hash, as diffusers' ``from_pretrained(revision=...)``).

Components are read from ``model_index.json``; parameter counts from the safetensors headers of each
component folder (8-byte little-endian header length, then a JSON header: no weights are read).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from qco_tune.core.config import ComponentRole
from qco_tune.core.presets import get_preset, is_preset, preset_for_hub_id, preset_names
from qco_tune.core.records import ComponentInfo, ModelInfo

__all__ = [
    "ModelError",
    "ModelNotFound",
    "classify_component",
    "download_command",
    "hf_hub_cache",
    "local_folder",
    "read_pipeline_folder",
    "resolve_model",
    "safetensors_numel",
]


class ModelError(ValueError):
    """A model reference that cannot be used as written; the message says what to do."""


class ModelNotFound(ModelError):
    """A reference that names nothing available on this machine."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_DENOISER_NAMES = ("transformer", "unet", "prior", "decoder")
_DENOISER_SUFFIXES = (
    "Transformer2DModel",
    "Transformer3DModel",
    "TransformerModel",
    "UNet2DConditionModel",
    "UNet3DConditionModel",
    "UNetMotionModel",
    "UNetSpatioTemporalConditionModel",
    "UNet2DModel",
)
# Pipeline entries that hold no weights worth counting or quantizing.
_NOT_MODELS = ("Tokenizer", "TokenizerFast", "Scheduler", "Processor", "FeatureExtractor", "ImageProcessor")
_VIDEO_PIPELINE_PREFIXES = ("Wan", "LTX", "Mochi", "Allegro", "Latte", "SkyReels", "HunyuanVideo", "CogVideoX")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1}
_MAX_HEADER = 100 * 2**20  # a safetensors header larger than this is not a header


def resolve_model(reference: str, weights: str, revision: str | None = None) -> ModelInfo:
    """Resolve ``reference`` with ``weights`` (``random`` or ``real``) into a ``ModelInfo``.

    ``revision`` (a branch, tag or commit hash; None: ``main``) applies to hub ids only. Raises
    ``ModelError`` (``ModelNotFound``, or ``UnknownPreset`` from the presets) with a one-line message
    that says how to proceed.
    """
    reference = reference.strip()
    if not reference:
        raise ModelError("model is empty: name a preset, a local diffusers folder or a hub id")
    revision = (revision or "").strip() or None
    if is_preset(reference):
        _no_revision(reference, revision, "a random-weight preset")
        return _preset(reference, weights)
    path = Path(reference).expanduser()
    hub_like = bool(_HUB_ID.match(reference)) and not _looks_like_path(reference)
    if not (path.is_dir() or hub_like or _looks_like_path(reference)):
        get_preset(reference)  # neither a folder nor a hub id: a misspelt preset ("did you mean")
    if weights == "random":
        raise ModelError(_random_needs_preset(reference))
    if path.is_dir():
        _no_revision(reference, revision, "a local folder")
        return read_pipeline_folder(path, reference=reference, source="local")
    if not hub_like:
        raise ModelNotFound(f"no folder {reference!r}: point model at a local diffusers pipeline folder")
    snapshot = _cached_snapshot(reference, revision)
    if snapshot is None:
        raise ModelNotFound(_not_cached(reference, revision))
    return read_pipeline_folder(snapshot, reference=reference, source="hub", revision=revision)


def local_folder(reference: str, revision: str | None = None) -> Path | None:
    """The folder a non-preset ``reference`` would load from (a local folder, or a cached hub snapshot), if any.

    Never raises: for defaults that are nice to have (a study's workload), not for resolving.
    """
    reference = reference.strip()
    if not reference or is_preset(reference):
        return None
    path = Path(reference).expanduser()
    if path.is_dir():
        return path
    if _HUB_ID.match(reference) and not _looks_like_path(reference):
        try:
            return _cached_snapshot(reference, revision)
        except (OSError, ModelError):
            return None
    return None


def _no_revision(reference: str, revision: str | None, kind: str) -> None:
    if revision is not None:
        raise ModelError(f"revision {revision!r} applies to hub ids only; {reference} is {kind}: leave revision out")


def _preset(name: str, weights: str) -> ModelInfo:
    preset = get_preset(name)
    if weights == "real":
        hint = f"; for the real model use model = {preset.hub_id!r}" if preset.hub_id else ""
        raise ModelError(f'preset {preset.name!r} has random weights only (weights = "random"){hint}')
    return preset.model_info()


def _looks_like_path(reference: str) -> bool:
    """Paths start with ``.``, ``/`` or ``~``, or have more than the one slash of ``org/name``."""
    return reference.startswith((".", "/", "~")) or reference.count("/") > 1 or (os.sep != "/" and os.sep in reference)


def _random_needs_preset(reference: str) -> str:
    preset = preset_for_hub_id(reference)
    if preset is not None:
        return (
            f"random weights are built only for presets; {reference} is preset {preset.name!r}: "
            f'write model = {preset.name!r}, or weights = "real" to load it from the local cache'
        )
    return (
        f"random weights are built only for presets ({', '.join(preset_names())}); "
        f'to load {reference} set weights = "real"'
    )


def download_command(hub_id: str, revision: str | None = None) -> str:
    """The ``hf download`` line that puts ``hub_id`` (at ``revision``) into the cache."""
    return f"hf download {hub_id}" + (f" --revision {revision}" if revision else "")


def _not_cached(hub_id: str, revision: str | None) -> str:
    what = f"{hub_id} at revision {revision!r}" if revision else hub_id
    return (
        f"{what} is not in the local Hugging Face cache ({hf_hub_cache()}) and qco-tune does not download "
        f"(no network here): run `{download_command(hub_id, revision)}` on a machine with network, point "
        f"--model at a local diffusers folder, or use a random-weight preset ({', '.join(preset_names())})"
    )


# -- the Hugging Face cache ------------------------------------------------------------------------


def hf_hub_cache() -> Path:
    """Where huggingface_hub keeps repositories: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the default."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _cached_snapshot(hub_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot of ``hub_id`` at ``revision`` (a branch or tag through its ``refs`` file, or a
    commit hash; None: ``main``), as huggingface_hub resolves it (``snapshot_download(...,
    local_files_only=True)``: never the network), or None when it is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, revision=revision, cache_dir=hf_hub_cache(), local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    except HFValidationError as exc:
        raise ModelError(f"{hub_id!r} is not a valid hub id: {str(exc).splitlines()[0]}") from exc


# -- a diffusers pipeline folder -------------------------------------------------------------------


def read_pipeline_folder(
    folder: Path, *, reference: str, source: str = "local", revision: str | None = None
) -> ModelInfo:
    """Components, roles and parameter counts of a diffusers pipeline folder."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelError(
            f"{reference} is not a diffusers pipeline folder: no model_index.json in {folder} "
            "(a single-file checkpoint or one component's folder cannot be tuned as a pipeline)"
        )
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{index_path} is not readable JSON: {exc}") from exc
    if not isinstance(index, dict):
        raise ModelError(f"{index_path} is not a JSON object")
    components = tuple(
        ComponentInfo(
            name=name,
            role=classify_component(name, class_name),
            class_name=class_name,
            params=_component_params(folder / name),
        )
        for name, class_name in _model_entries(index)
    )
    if not any(c.role == "denoiser" for c in components):
        names = ", ".join(c.name for c in components) or "none"
        raise ModelError(f"{reference}: model_index.json names no denoiser (transformer or unet); components: {names}")
    missing = _missing_parts(folder, index)
    if missing:
        again = f"download it again (`{download_command(reference, revision)}`)" if source == "hub" else "copy it again"
        raise ModelError(f"{reference} is incomplete: {'; '.join(missing)} ({again})")
    pipeline_class = str(index.get("_class_name", "DiffusionPipeline"))
    return ModelInfo(
        reference=reference,
        source=source,  # type: ignore[arg-type]
        pipeline_class=pipeline_class,
        components=components,
        path=str(folder),
        is_video=_is_video(pipeline_class, components),
        revision=revision,
    )


_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.gguf")


def _missing_parts(folder: Path, index: dict[str, Any]) -> list[str]:
    """What ``model_index.json`` lists and the folder lacks: component folders, and weights of models."""
    models = dict(_model_entries(index))
    missing = []
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        part = folder / name
        if not part.is_dir():
            missing.append(f"{name} ({value[1]}) has no folder {part}")
        elif name in models and not any(next(part.glob(p), None) for p in _WEIGHT_PATTERNS):
            missing.append(f"{name} ({value[1]}) has no weights in {part} (no *.safetensors or *.bin)")
    return missing


def _model_entries(index: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, class name) of the entries that are models: not private keys, flags, tokenizers or schedulers."""
    entries = []
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library, class_name = value
        if library is None or not isinstance(class_name, str):
            continue  # an optional component saved as [null, null]
        if name.startswith(("tokenizer", "scheduler")) or class_name.endswith(_NOT_MODELS):
            continue
        entries.append((name, class_name))
    return entries


def classify_component(name: str, class_name: str) -> ComponentRole:
    """The role of a pipeline component, from its attribute name and class name."""
    if name in _DENOISER_NAMES or name.startswith(("transformer", "unet")) or class_name.endswith(_DENOISER_SUFFIXES):
        return "denoiser"
    if name.startswith("text_encoder"):
        return "text_encoder"
    if name == "vae" or class_name.startswith("Autoencoder"):
        return "vae"
    return "other"


def _is_video(pipeline_class: str, components: tuple[ComponentInfo, ...]) -> bool:
    if "Video" in pipeline_class or pipeline_class.startswith(_VIDEO_PIPELINE_PREFIXES):
        return True
    return any(c.role == "denoiser" and c.class_name.endswith("3DModel") for c in components)


# -- parameter counts --------------------------------------------------------------------------------


def _component_params(folder: Path) -> int | None:
    """Parameters of one component folder from its safetensors files, or None where they are not there."""
    if not folder.is_dir():
        return None
    files = _weight_files(folder)
    if files:
        try:
            return sum(safetensors_numel(f) for f in files)
        except (OSError, ValueError):
            pass
    return _params_from_index_size(folder)


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of the default (non-variant) checkpoint, or of the only variant present."""
    for index in sorted(folder.glob("*.safetensors.index.json")):
        if index.name.count(".") == 3:  # name.safetensors.index.json: not a variant like name.fp16.safetensors...
            shards = _index_shards(index)
            if shards and all((folder / s).is_file() for s in shards):
                return [folder / s for s in sorted(shards)]
    singles = sorted(folder.glob("*.safetensors"))
    plain = [f for f in singles if f.name.count(".") == 1]
    if plain:
        return plain
    variants = {f.name.split(".")[-2] for f in singles}
    return singles if len(variants) == 1 else []


def _index_shards(index: Path) -> set[str]:
    try:
        data = json.loads(index.read_text())
        return set(data.get("weight_map", {}).values())
    except (OSError, ValueError, AttributeError):
        return set()


def _params_from_index_size(folder: Path) -> int | None:
    """``metadata.total_size`` of the index divided by the bytes per element of the dtype its name implies."""
    for index in sorted(folder.glob("*.safetensors.index.json")):
        try:
            total = int(json.loads(index.read_text())["metadata"]["total_size"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        bytes_per = 4 if ".fp32." in index.name else 2  # diffusers and transformers save bf16/fp16 by default
        return total // bytes_per
    return None


def safetensors_numel(path: Path) -> int:
    """Total elements of the tensors in a safetensors file, from its header alone."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise ValueError(f"{path}: header length {length} is not plausible")
        header = json.loads(f.read(length))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in entry["shape"]:
            count *= int(dim)
        total += count
    return total
