"""What a trial keeps besides its timings: the study's compile artefacts, fidelity against the reference, the output.

Each failure here is recorded as a notice; none fails the trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qco_tune.core.keys import COMPILE_CACHE_KEY
from qco_tune.core.records import TrialRequest
from qco_tune.measure.backends.record import REASON_MAX_CHARS, TrialRecord

if TYPE_CHECKING:
    from qco_tune.core.compile_artifacts import ArtifactKey
    from qco_tune.measure.backends.artifacts import ArtifactReport


def load_compile_artifacts(request: TrialRequest, record: TrialRecord) -> tuple[ArtifactReport, ArtifactKey] | None:
    """Load the study's compile artefacts of this GPU kind, torch and Triton, before anything compiles.

    Returns (report, key) for ``save_compile_artifacts``, or None when the trial does not compile or
    the request names no artefact folder. Recorded in ``extra["compile_cache"]["artifacts"]``.
    """
    from qco_tune.measure.backends.artifacts import current_key, load_artifacts

    if not request.compile_artifacts_dir or request.config.compile == "none":
        return None
    try:
        key = current_key(request.device)
        report = load_artifacts(request, key)
    except Exception as exc:  # an unreadable folder: the trial compiles from scratch, and says why
        notice = f"compile artefacts not loaded: {type(exc).__name__}: {exc}"[:REASON_MAX_CHARS]
        record.extra.setdefault(COMPILE_CACHE_KEY, {})["artifacts"] = {"notices": [notice]}
        return None
    if report is None:
        return None
    record.extra.setdefault(COMPILE_CACHE_KEY, {})["artifacts"] = report.to_dict()
    return report, key


def save_compile_artifacts(
    request: TrialRequest, record: TrialRecord, report: ArtifactReport, key: ArtifactKey
) -> None:
    """After the first call (the compilation): write what it compiled or hit as this configuration's file.

    A failure to save is a notice, never the trial's failure.
    """
    from qco_tune.measure.backends.artifacts import save_artifacts

    try:
        save_artifacts(request, report, key)
    except Exception as exc:
        report.notices.append(f"saving compile artefacts failed: {type(exc).__name__}: {exc}"[:REASON_MAX_CHARS])
    record.extra[COMPILE_CACHE_KEY]["artifacts"] = report.to_dict()


def measure_fidelity(request: TrialRequest, record: TrialRecord, output: Any, latents: Any | None) -> None:
    """Save the reference (when this trial defines it) and compare the first call's output with it.

    A failure here is recorded in ``extra["fidelity_error"]``; it never fails the trial.
    """
    import math

    from qco_tune.measure.backends.fidelity import compare, save_reference

    if request.reference_dir is None:
        return
    weights = _weights_fingerprint(request)
    try:
        if request.save_reference:
            meta = {
                "trial": request.trial_number,
                "config": request.config.describe(),
                "offload": request.config.offload,
                "device": request.device,
                "dtype": request.dtype,
                "workload": request.workload.__dict__,
                "weights": weights,
            }
            save_reference(request.reference_dir, output, latents, meta)
        found = compare(request.reference_dir, output, latents)
    except Exception as exc:  # fidelity is a figure of the trial, not a condition of it
        record.extra["fidelity_error"] = f"{type(exc).__name__}: {exc}"[:REASON_MAX_CHARS]
        return
    if found is None:
        return
    made_with = found["reference"].get("weights")
    if weights and made_with and weights != made_with:
        record.extra["fidelity_error"] = "the reference was made from other random weights (a rebuilt preset)"
        return
    psnr = found["psnr_db"]
    if math.isnan(psnr):
        record.extra["fidelity_error"] = "the output is not finite (NaN or infinity)"
    else:
        record.psnr_db = psnr
    record.latent_cosine = found["latent_cosine"]
    reference = found["reference"]
    record.extra["reference"] = {"trial": reference.get("trial"), "offload": reference.get("offload")}


def _weights_fingerprint(request: TrialRequest) -> str | None:
    """The materialised preset's weights fingerprint (None for real weights, which do not change)."""
    if request.model.source != "preset":
        return None
    from qco_tune.core import paths
    from qco_tune.core.presets.cache import marker, preset_folder

    data = marker(preset_folder(request.model.reference, request.cache_dir or paths.cache_dir())) or {}
    value = data.get("fingerprint")
    return value if isinstance(value, str) else None


def save_output(array: Any, path: Path, record: TrialRecord) -> None:
    """Save the trial's output array (``.npy``) and note its path and shape in the record."""
    import numpy as np

    np.save(path, array)
    record.extra.update(output_path=str(path), output_shape=list(array.shape))
