"""Fidelity: how far a trial's output is from the study's reference output (same seed, unoptimised).

The reference trial (bf16, no compile, no offload; model offload only where it cannot fit otherwise)
writes its first call's decoded output and final latents into the study's reference folder; every
later trial compares its own first call with them: PSNR in dB of the decoded output (values in
[0, 1], so the peak is 1) and cosine similarity of the final latents. The first call is used, not a
timed one, so that capturing latents costs no timed time. With random weights the figures measure
numerical deviation (quantization, kernels, compilation), not picture quality.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from qco_tune.measure.reference import META_FILE, load_meta

OUTPUT_FILE = "output.npy"
LATENTS_FILE = "latents.npy"


class FinalLatents:
    """A ``callback_on_step_end`` that passes every call to ``inner`` and keeps the last step's latents.

    While ``enabled`` it holds a reference to ``callback_kwargs["latents"]`` of each step (no copy,
    so it costs nothing); after the call, ``latents()`` copies the final ones to the host.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.enabled = False
        self._last: Any = None

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.enabled:
            self._last = callback_kwargs.get("latents")
        result: dict[str, Any] = self.inner(pipe, step, timestep, callback_kwargs)
        return result

    def latents(self) -> Any | None:
        """The final latents as a float32 numpy array (None when the pipeline passed none), and forget them."""
        last, self._last = self._last, None
        if last is None:
            return None
        return last.detach().float().cpu().numpy()


def psnr(output: Any, reference: Any, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of ``output`` against ``reference`` (``inf`` when identical)."""
    import numpy as np

    a, b = np.asarray(output, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output shape {a.shape} differs from the reference's {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if not math.isfinite(mse):
        return float("nan")
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def cosine(a: Any, b: Any) -> float | None:
    """Cosine similarity of two arrays of one shape, flattened; None when either is all zeros."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"latents of {x.size} values differ from the reference's {y.size}")
    if np.array_equal(x, y) and x.any():
        return 1.0  # exactly, where rounding would give 0.9999999999999999
    norms = float(np.linalg.norm(x) * np.linalg.norm(y))
    return max(-1.0, min(1.0, float(np.dot(x, y) / norms))) if norms > 0 else None


def save_reference(folder: str | os.PathLike[str], output: Any, latents: Any | None, meta: dict[str, Any]) -> None:
    """Write the reference (replacing an older one), each file atomically and the metadata last."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)  # incomplete until the new metadata is there
    for name, array in ((OUTPUT_FILE, output), (LATENTS_FILE, latents)):
        target = folder / name
        if array is None:
            target.unlink(missing_ok=True)
            continue
        tmp = folder / f".{name}.{uuid.uuid4().hex}.npy"
        np.save(tmp, np.asarray(array))
        os.replace(tmp, target)
    _write_json(folder / META_FILE, meta)


def compare(folder: str | os.PathLike[str], output: Any, latents: Any | None) -> dict[str, Any] | None:
    """``{"psnr_db", "latent_cosine", "reference"}`` of a first call against the reference; None without one."""
    import numpy as np

    meta = load_meta(folder)
    if meta is None:
        return None
    folder = Path(folder)
    result: dict[str, Any] = {"psnr_db": psnr(output, np.load(folder / OUTPUT_FILE)), "reference": meta}
    latents_path = folder / LATENTS_FILE
    result["latent_cosine"] = (
        cosine(latents, np.load(latents_path)) if latents is not None and latents_path.exists() else None
    )
    return result


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
