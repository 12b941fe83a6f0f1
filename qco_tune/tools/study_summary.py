"""Record a study as results: a JSON summary and a short Markdown table beside it.

    python3 -m qco_tune.tools.study_summary STUDY --storage URL --out DIR [--against RECIPE]

Writes ``DIR/summary.json`` (``qco-tune show --json``'s summary with the record's fields added) and
``DIR/summary.md``: every seeded guide recipe and the configurations on the feasible Pareto front, each
with latency, per-step time, peak memory (as the budget counts it), cold start (the first call) and
fidelity (PSNR of the decoded output and cosine of the final latents against the study's unoptimised
reference); the speed-up of the fastest feasible configuration over the recipe ``--against`` (default:
the guide's "quantization + compile"), per call and per step, also where that recipe went over the
budget; the memory model's error on the feasible trials; the first call of compiling trials with a cold
and a warm compilation cache; the number of searched trials; and where it ran (GPU, driver and library
versions from the study's probe).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from qco_tune.core.units import format_size
from qco_tune.search.pareto import ParetoSummary, TrialRow

AGAINST = "quantization + compile"
"""The guide's recipe the headline speed-up is measured against (a fallback backend adds a suffix)."""
VERSIONS = ("nvidia_driver", "cuda", "torch", "diffusers", "transformers", "bitsandbytes", "torchao", "optimum-quanto")


def recipe_row(summary: ParetoSummary, name: str) -> TrialRow | None:
    """The seeded recipe called ``name``, or ``name`` with the fallback backend's suffix (``name (torchao_int8wo)``)."""
    for label, row in summary.baselines.items():
        if label == name or label.startswith(f"{name} ("):
            return row
    return None


def ratio(slow: float | None, fast: float | None) -> float | None:
    return slow / fast if slow and fast else None


def summarize(study: Any, against: str = AGAINST) -> dict[str, Any]:
    """The study's results as one JSON-able dict (``study`` is the Optuna study as stored): ``show --json``'s
    summary (``loop.summary.study_json``) with what the record adds: the versions it names, trial counts,
    the headline speed-up, GPU time, the trials of the Markdown table (``table``: numbers of ``trials``, recipes
    first) and the first calls by compilation cache."""
    from qco_tune.core.keys import CAPABILITIES_ATTR
    from qco_tune.loop.setup import load_summary
    from qco_tune.loop.summary import compile_cache_starts, study_json

    summary = load_summary(study)
    caps = study.user_attrs.get(CAPABILITIES_ATTR, {})
    versions = caps.get("versions", {}) if isinstance(caps, dict) else {}
    searched = [
        r for r in summary.rows if not r.baseline and r.category in ("front", "dominated", "infeasible", "failed")
    ]
    # The recipes, then every searched trial that ran (dominated and failed ones too: what the search cost).
    shown = [row for row in summary.rows if row.baseline and row.category != "superseded"]
    rest = {row.number: row for row in [*summary.front, *searched] if row not in shown}
    shown += [rest[n] for n in sorted(rest)]
    best = summary.best
    target = recipe_row(summary, against)
    target_m, best_m = (target.measurement if target else None), (best.measurement if best else None)
    starts = compile_cache_starts(summary.rows)
    common = study_json(study, summary)
    record = {
        "versions": {k: versions[k] for k in VERSIONS if k in versions},
        "trial_counts": {
            "finished": sum(1 for r in summary.rows if r.category in ("front", "dominated", "infeasible", "failed")),
            "searched": len(searched),
            "searched_failed": sum(1 for r in searched if r.category == "failed"),
            "skipped": sum(1 for r in summary.rows if r.category == "skipped"),
        },
        "headline": {
            "against": target.baseline if target else against,
            "against_trial": target.number if target else None,
            "against_state": target.category if target else None,
            "speedup": ratio(target.latency_s if target else None, best.latency_s if best else None),
            "speedup_per_step": ratio(
                target_m.step_time_s if target_m else None, best_m.step_time_s if best_m else None
            ),
        },
        "gpu_seconds": gpu_seconds(summary),
        "table": [r.number for r in shown],
        "compile_first_call_s": {
            state: {"trials": len(v), "median": statistics.median(v) if v else None} for state, v in starts.items()
        },
    }
    if common.keys() & record.keys():  # pragma: no cover - a programming error
        raise ValueError(f"the record's fields would replace show --json's: {sorted(common.keys() & record.keys())}")
    return {**common, **record}


def gpu_seconds(summary: ParetoSummary) -> dict[str, Any]:
    """What the study's trials cost, in trial order: in all, in trials that ended out of memory, and until
    the fastest feasible configuration had been measured (``Measurement.extra["wall_s"]``, child start to
    result; skipped proposals cost nothing); also what trials cut off by a stop (Ctrl-C, a time limit) spent,
    and the time to the fastest without them (what one uninterrupted run would have spent)."""
    spent = oom = cut = 0.0
    to_best: float | None = None
    to_best_uncut: float | None = None
    best = summary.best.number if summary.best else None
    for row in sorted(summary.rows, key=lambda r: r.number):
        m = row.measurement
        wall = (m.extra or {}).get("wall_s") if m else None
        if not isinstance(wall, (int, float)):
            continue
        spent += float(wall)
        if m is not None and m.status == "oom":
            oom += float(wall)
        if m is not None and m.status == "interrupted":
            cut += float(wall)
        if row.number == best:
            to_best, to_best_uncut = spent, spent - cut
    return {
        "total": spent,
        "oom": oom,
        "oom_share": oom / spent if spent else None,
        "interrupted": cut,
        "to_best": to_best,
        "to_best_uninterrupted": to_best_uncut,
    }


def _s(value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f} s" if value is not None else "-"


def _measured(trial: dict[str, Any], key: str) -> Any:
    return (trial["measurement"] or {}).get(key)


def _psnr(trial: dict[str, Any]) -> str:
    psnr, cos = _measured(trial, "psnr_db"), _measured(trial, "latent_cosine")
    if psnr is None:
        return "-"
    text = "∞" if psnr == float("inf") else f"{psnr:.1f} dB"
    return text + (f" · {cos:.4f}" if cos is not None else "")


def markdown(data: dict[str, Any]) -> str:
    """The summary as a short Markdown page: where, the headline, the table, the memory model."""
    budget, spec = format_size(data["budget_bytes"]), data.get("spec") or {}
    metric = spec.get("memory_metric", "device")
    lines = [f"# {data['study']}: {spec.get('model')} under {budget} ({metric} memory)", ""]
    versions = ", ".join(f"{k} {v}" for k, v in data["versions"].items())
    lines += [f"{data['gpu']}; {versions}.", ""]
    t = data["trial_counts"]
    lines += [
        f"{t['finished']} trials finished ({t['searched']} searched, {t['searched_failed']} of them failed), "
        f"{t['skipped']} proposal(s) skipped before running.",
        "",
    ]
    head = data["headline"]
    trials = {t["number"]: t for t in data["trials"]}
    best = trials.get(data["best"]) if data["best"] is not None else None
    if best is None:
        lines += ["No feasible configuration.", ""]
    elif head["speedup"] is None:
        lines += [
            f"Fastest feasible: #{best['number']} {best['configuration']}, {_s(best['latency_s'])}; "
            f"the recipe {head['against']!r} has no measured latency in this study.",
            "",
        ]
    else:
        over = " (the recipe itself is over the budget)" if head["against_state"] == "infeasible" else ""
        per_step = f", {head['speedup_per_step']:.2f}× per step" if head["speedup_per_step"] else ""
        lines += [
            f"**Fastest feasible: #{best['number']} {best['configuration']}: {_s(best['latency_s'])} per call, "
            f"{head['speedup']:.2f}× faster than the guide's {head['against']!r} (#{head['against_trial']}){per_step}"
            f"{over}.**",
            "",
        ]
    spent = data["gpu_seconds"]
    if spent["total"]:
        reached = ""
        if spent["to_best"]:
            reached = f", the fastest feasible reached after {spent['to_best'] / 60:.1f} min"
            if spent["interrupted"]:
                reached += f" ({spent['to_best_uninterrupted'] / 60:.1f} min not counting trials cut off by a stop)"
        lines += [
            f"Trial GPU time: {spent['total'] / 60:.1f} min in all{reached}; {spent['oom_share']:.0%} of it in "
            f"trials that ran out of memory, {spent['interrupted'] / spent['total']:.0%} in trials cut off by a stop.",
            "",
        ]
    lines += [
        "| # | configuration | recipe | state | latency | s/step | peak memory | cold start | PSNR · cos |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in (trials[n] for n in data["table"]):
        state = t["category"] if t["category"] != "failed" else f"failed: {(t['reason'] or '?')[:60]}"
        lines.append(
            f"| {t['number']} | {t['configuration']} | {t['baseline'] or ''} | {state} | {_s(t['latency_s'])} | "
            f"{_s(_measured(t, 'step_time_s'), 4)} | {format_size(t['memory_bytes'])} | "
            f"{_s(_measured(t, 'first_call_s'), 1)} | {_psnr(t)} |"
        )
    mm = data["memory_model"]["feasible"]
    if mm["trials"]:
        lines += [
            "",
            f"Memory model on the feasible trials (predicted before each ran, against measured): median error "
            f"{mm['median_abs_error']:.0%}, worst {mm['worst_abs_error']:.0%} (#{mm['worst_trial']}), "
            f"{mm['share_within']:.0%} within ±{mm['tolerance']:.0%} ({mm['trials']} trials).",
        ]
    starts = data["compile_first_call_s"]
    if starts["cold"]["trials"] or starts["warm"]["trials"]:
        parts = [f"{v['trials']} {k} (median {_s(v['median'], 1)})" for k, v in starts.items() if v["trials"]]
        lines += ["", "First call of compiling trials by compilation cache: " + ", ".join(parts) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="the study's name")
    parser.add_argument("--storage", required=True, help="its storage URL, e.g. sqlite:///flux16.db")
    parser.add_argument("--out", type=Path, required=True, help="folder for summary.json and summary.md")
    parser.add_argument("--against", default=AGAINST, help=f"the recipe of the headline speed-up ({AGAINST!r})")
    args = parser.parse_args(argv)

    from qco_tune.loop.context import StudyError
    from qco_tune.loop.summary import load_stored_study, strict_json
    from qco_tune.store.storage import StorageError

    try:
        study = load_stored_study(args.study, args.storage)
    except (StorageError, StudyError) as exc:  # a missing study or storage: one line, as the CLI says it
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = summarize(study, args.against)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(strict_json(data), indent=2, default=str, allow_nan=False) + "\n")
    page = markdown(data)
    (args.out / "summary.md").write_text(page)
    print(page, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
