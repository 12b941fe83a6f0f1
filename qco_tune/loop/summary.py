"""The JSON forms of stored studies (``qco-tune show/list/compare --format json``, the recording tools' records).

Loading a stored study by name, the summary (the Pareto summary plus the study's spec, model and
machine, and the memory model's errors), and the helpers the text reports share.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from qco_tune.core.keys import ATTR_PREFIX
from qco_tune.search.pareto import ParetoSummary, TrialRow

if TYPE_CHECKING:
    import optuna


def load_stored_study(name: str, url: str | None) -> optuna.Study:
    """Load a study by name; ``StudyError`` naming the storage (masked) when it is not there."""
    import optuna

    from qco_tune.loop.context import StudyError
    from qco_tune.store.storage import mask_url, open_storage, storage_url

    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        hint = f"; studies there: {', '.join(known[:8])}" if known else "; it holds no study yet"
        raise StudyError(f"no study named {name!r} in {mask_url(storage_url(url))}{hint}") from None


def study_json(study: optuna.Study, summary: ParetoSummary | None = None) -> dict[str, Any]:
    """The study's summary as a JSON-ready dict: its overview (``study_overview``), every trial and the
    memory model's errors (infinite floats as they are: pass it through ``strict_json`` to write it).
    ``summary``: the study's ``load_summary``, where the caller has it already."""
    from qco_tune.loop.setup import load_summary
    from qco_tune.search.pareto import row_to_dict

    summary = summary or load_summary(study)
    return {
        **study_overview(study, summary),
        "trials": [row_to_dict(r) for r in summary.rows],
        "memory_model": memory_model_dict(summary),
    }


def study_overview(study: optuna.Study, summary: ParetoSummary) -> dict[str, Any]:
    """``show --json`` without its per-trial parts: name, the ``qco.*`` attributes (spec, model, GPU...) and
    the Pareto summary's figures. ``list --format json`` and ``compare --format json`` give one per study."""
    from qco_tune.search.pareto import summary_to_dict

    figures = summary_to_dict(summary)
    figures.pop("trials")
    return {
        "study": study.study_name,
        **{
            key.removeprefix(ATTR_PREFIX): value
            for key, value in study.user_attrs.items()
            if key.startswith(ATTR_PREFIX)
        },
        **figures,
        "best_latency_s": summary.best.latency_s if summary.best else None,
    }


def studies_json(url: str | None) -> dict[str, Any]:
    """``list --format json``: the storage (masked) and every study's overview (``study_overview``)."""
    import optuna

    from qco_tune.loop.setup import load_summary
    from qco_tune.store.storage import mask_url, open_storage, storage_url

    storage = open_storage(url)
    overviews = []
    for item in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=item.study_name, storage=storage)
        overviews.append(study_overview(study, load_summary(study)))
    return {"storage": mask_url(storage_url(url)), "studies": overviews}


IDENTICAL_FIELD = "identical"
"""Written beside every ``psnr_db``: true where the output equals the reference's (an infinite PSNR, written
as null), false where it differs, null where no fidelity was measured."""


def strict_json(value: Any) -> Any:
    """``value`` as plain JSON, one type per field: an infinite or NaN float becomes null (plain JSON has no
    such numbers; Python would write ``Infinity``, which jq and browsers reject), and every object with a
    ``psnr_db`` gets ``identical`` beside it (``IDENTICAL_FIELD``), so that an output identical to the
    reference (infinite PSNR) reads ``"psnr_db": null, "identical": true``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        out = {k: strict_json(v) for k, v in value.items()}
        if "psnr_db" in value and IDENTICAL_FIELD not in value:
            psnr = value["psnr_db"]
            out[IDENTICAL_FIELD] = None if psnr is None else psnr == math.inf
        return out
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """``value`` written as strict JSON (``strict_json``), indented: what every ``--format json`` prints."""
    import json

    return json.dumps(strict_json(value), indent=2, default=str, allow_nan=False)


def compile_cache_starts(rows: tuple[TrialRow, ...]) -> dict[str, list[float]]:
    """First-call seconds of the compiling trials that finished, by the state of their compilation cache
    (``cold``: empty when the trial started; ``warm``: it held artefacts)."""
    starts: dict[str, list[float]] = {"cold": [], "warm": []}
    for row in rows:
        m = row.measurement
        cache = m.extra.get("compile_cache") if m is not None else None
        if m is None or m.status != "ok" or not isinstance(cache, dict) or m.first_call_s is None:
            continue
        if cache.get("state") in starts:
            starts[cache["state"]].append(m.first_call_s)
    return starts


def relative(value: float | None, reference: float | None) -> float | None:
    return value / reference - 1 if value is not None and reference else None


MEASURED = ("front", "dominated", "infeasible")


def memory_model_dict(summary: ParetoSummary) -> dict[str, Any]:
    """``show --json``'s ``memory_model``: error summaries (feasible and all finished trials, calibrated
    and not) and each finished trial's prediction against its measurement."""
    from qco_tune.search.calibration import relative_error, row_errors

    return {
        "feasible": row_errors(summary.rows, feasible_only=True).to_dict(),
        "feasible_uncalibrated": row_errors(summary.rows, feasible_only=True, raw=True).to_dict(),
        "finished": row_errors(summary.rows).to_dict(),
        "finished_uncalibrated": row_errors(summary.rows, raw=True).to_dict(),
        "trials": [
            {
                "number": r.number,
                "category": r.category,
                "predicted_bytes": r.predicted_bytes,
                "predicted_raw_bytes": r.predicted_raw_bytes,
                "measured_bytes": r.memory_bytes,
                "error": relative_error(r.predicted_bytes, r.memory_bytes),
                "raw_error": relative_error(r.predicted_raw_bytes, r.memory_bytes),
            }
            for r in summary.rows
            if r.category in MEASURED and r.memory_bytes
        ],
    }
