"""Materialise a random-weight preset once, as a local safetensors diffusers folder, and reuse it.

``python -m qco_tune.measure.backends.materialize NAME [--cache-dir DIR] [--device auto|cuda|cpu] [--phases]``
builds (or finds) ``<cache>/presets/NAME/`` and prints one JSON line: ``path``, ``built``, ``seconds``.
``--count`` prints every preset's parameter counts, taken on the meta device, instead.

The folder is written component by component (build one model, save it, free it), so the peak
memory is the largest component, not the pipeline: on a GPU each model is created there in the
saved dtype (about a second for FLUX.1's 12B transformer) and most of the time goes to writing.
``model_index.json`` comes from the pipeline assembled with meta-device models. Everything is
written into a temporary sibling folder, with the completion marker last, and renamed into place:
a reader never sees a partial checkpoint, and concurrent builders race harmlessly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qco_tune.core.presets import PRESETS, get_preset
from qco_tune.core.presets.cache import BUILDER_VERSION, MARKER, check_disk, is_materialized, marker, preset_folder
from qco_tune.measure.backends.presets_build import (
    build_model,
    build_pipeline,
    count_parameters,
    default_device,
)
from qco_tune.measure.launcher import report_phase

__all__ = ["LineProgress", "Materialized", "PhaseProgress", "Progress", "main", "materialize_preset"]


class Progress(Protocol):
    """Receives the steps of a build: ``start`` once, ``step`` per task, ``finish`` at the end."""

    def start(self, title: str, total: int) -> None: ...
    def step(self, description: str, advance: int = 1) -> None: ...
    def finish(self) -> None: ...


class SilentProgress:
    def start(self, title: str, total: int) -> None:
        pass

    def step(self, description: str, advance: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


class PhaseProgress(SilentProgress):
    """Prints ``QCO-PHASE materialize <step>`` lines, which the runner shows as a trial's phase."""

    def step(self, description: str, advance: int = 1) -> None:
        report_phase(f"materialize {description}")


class LineProgress(SilentProgress):
    """Plain lines on stderr, one per component built and saved (the bar is the CLI's: ``qco-tune presets``)."""

    def start(self, title: str, total: int) -> None:
        self._title, self._total, self._done = title, total, 0
        print(f"{title}: {total} steps", file=sys.stderr, flush=True)

    def step(self, description: str, advance: int = 1) -> None:
        self._done += advance
        print(f"{self._title}: {self._done}/{self._total} {description}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Materialized:
    """Where a preset lives, whether this call built it, and how long the build took (then or before)."""

    path: Path
    built: bool
    seconds: float | None
    """Seconds the build took (from the marker when it was built earlier)."""


def materialize_preset(
    name: str,
    cache_dir: str | os.PathLike[str],
    device: str | None = None,
    progress: Progress | None = None,
) -> Materialized:
    """Build ``<cache_dir>/presets/<name>/`` unless a complete folder of this builder version is there.

    ``device`` is where weights are created (default: CUDA when available, else the CPU; the tiny
    presets always on the CPU, so that their weights are the same on every machine). Raises
    ``UnknownPreset`` (with the closest name) and ``DiskSpaceError`` (with the bytes needed and
    free) before anything is written. A folder without the marker, or from an older builder, is rebuilt.
    """
    preset = get_preset(name)
    final = preset_folder(preset.name, cache_dir)
    if is_materialized(preset.name, cache_dir):
        return Materialized(final, built=False, seconds=(marker(final) or {}).get("seconds"))
    check_disk(preset.name, cache_dir)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{preset.name}-", dir=root))
    progress = progress or SilentProgress()
    versions = _versions()  # imports the libraries, which the build time should not include
    try:
        started = time.perf_counter()
        device = device or (default_device() if preset.hub_id else "cpu")
        info = _write(preset.name, tmp, device, progress)
        info["versions"] = versions
        info["seconds"] = round(time.perf_counter() - started, 3)
        (tmp / MARKER).write_text(json.dumps(info, indent=2))
        _install(tmp, final)
    finally:
        progress.finish()
        shutil.rmtree(tmp, ignore_errors=True)
    return Materialized(final, built=True, seconds=info["seconds"])


def _write(name: str, folder: Path, device: str, progress: Progress) -> dict[str, Any]:
    """Write the pipeline folder; the marker's content (without ``seconds``) is returned."""
    import torch

    preset = get_preset(name)
    blueprint = preset.blueprint
    progress.start(f"materialising {name}", total=len(blueprint.models) + 1)
    progress.step("tokenizers, schedulers, model_index.json", advance=0)
    skeleton = build_pipeline(blueprint, "meta", blueprint.save_dtype)
    skeleton.save_config(folder)
    for part_name in [t.name for t in blueprint.tokenizers] + [s.name for s in blueprint.schedulers]:
        getattr(skeleton, part_name).save_pretrained(folder / part_name)
    del skeleton
    progress.step("tokenizers, schedulers, model_index.json")
    counts: dict[str, dict[str, Any]] = {}
    timings: dict[str, dict[str, float]] = {}
    for part in blueprint.models:
        progress.step(f"{part.name}: build on {device}", advance=0)
        t0 = time.perf_counter()
        model = build_model(part, device, blueprint.save_dtype, blueprint.seed)
        _synchronize(device)
        t1 = time.perf_counter()
        progress.step(f"{part.name}: save", advance=0)
        if part.library == "diffusers":
            model.save_pretrained(folder / part.name, safe_serialization=True)
        else:
            model.save_pretrained(folder / part.name)
        t2 = time.perf_counter()
        counts[part.name] = {"class": type(model).__name__, "params": sum(p.numel() for p in model.parameters())}
        timings[part.name] = {"build_s": round(t1 - t0, 3), "save_s": round(t2 - t1, 3)}
        del model
        if str(device).startswith("cuda"):
            torch.cuda.empty_cache()
        progress.step(f"{part.name}: done")
    return {
        "preset": name,
        "builder_version": BUILDER_VERSION,
        "device": str(device),
        "dtype": blueprint.save_dtype,
        "components": counts,
        "timings": timings,
        "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
        "fingerprint": weights_fingerprint(folder, [m.name for m in blueprint.models]),
    }


FINGERPRINT_BYTES = 4 * 2**20


def weights_fingerprint(folder: Path, components: list[str]) -> str:
    """A short hash of the first bytes of each component's weights: equal folders, equal outputs.

    Random weights depend on the device and library versions they were drawn with; a fidelity
    reference made from other weights would compare noise with noise, so references record this.
    """
    import hashlib

    digest = hashlib.sha256()
    for name in components:
        for path in sorted((folder / name).glob("*.safetensors"))[:1]:
            with path.open("rb") as f:
                digest.update(f.read(FINGERPRINT_BYTES))
    return digest.hexdigest()[:16]


def _synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


def _install(tmp: Path, final: Path) -> None:
    """Move a finished build into place, replacing an incomplete or stale folder."""
    if final.exists():
        # Move the stale folder aside first so the rename below stays atomic.
        stale = final.with_name(f".{final.name}-stale-{uuid.uuid4().hex}")
        with contextlib.suppress(OSError):  # another process replaced it meanwhile
            final.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        if (marker(final) or {}).get("builder_version") != BUILDER_VERSION:
            raise  # a concurrent builder won only if its copy is complete


# -- tokenizers and schedulers alone (tests) --------------------------------------------------------------


def build_preset_pipeline(name: str, device: str = "cpu", dtype: Any = None) -> Any:
    """The preset's pipeline in memory (no folder): for tests and for counting on ``meta``."""
    blueprint = get_preset(name).blueprint
    return build_pipeline(blueprint, device, dtype or blueprint.save_dtype)


def _print_counts() -> None:
    for name, preset in PRESETS.items():
        counts = count_parameters(preset.blueprint)
        total = sum(n for _, n in counts.values())
        print(f"{name}  ({total:,d} parameters)")
        for component, (cls, n) in counts.items():
            print(f"  {component:16s} {cls:26s} {n:>16,d}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qco_tune.measure.backends.materialize", description=__doc__)
    parser.add_argument("name", nargs="?", help="preset name")
    parser.add_argument("--cache-dir", help="qco-tune cache (default: $QCO_CACHE or the XDG cache)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--phases", action="store_true", help="report progress as QCO-PHASE lines, not plain lines")
    parser.add_argument("--count", action="store_true", help="print every preset's parameter counts (meta device)")
    args = parser.parse_args(argv)
    if args.count:
        _print_counts()
        return 0
    if not args.name:
        parser.error("name a preset (or pass --count)")
    from qco_tune.core.paths import cache_dir
    from qco_tune.measure.backends.libraries import import_libraries, quiet_libraries

    quiet_libraries()
    import_libraries()
    progress: Progress = PhaseProgress() if args.phases else LineProgress()
    result = materialize_preset(
        args.name,
        args.cache_dir or cache_dir(),
        None if args.device == "auto" else args.device,
        progress,
    )
    print(json.dumps({"path": str(result.path), "built": result.built, "seconds": result.seconds}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
