"""The fast path's proof: the guide's recipe against float8, the new knobs under 16 GiB and the fast path, side by side.

    python3 -m qco_tune.tools.fast_path_proof OUT [--only a,b] [--budget-s 540] [--recorded DIR ...] [--tiny]

At full size (preset ``flux.1-dev``, random weights, its workload: 1024x1024, 28 steps), each case runs as one
trial through the study's own trial runner (``qco_tune.measure.runner.run_trial``: a fresh child, cold
compilation cache), as ``qco_tune.tools.gpu_full_size`` runs its cases (it shares that tool's materialising
and reference handling):

- ``reference``: bf16, unoptimised: the output every PSNR is measured against;
- ``a``: the guide's "quantization + compile" recipe, as the search space seeds it (``SearchSpace.baselines``);
- ``b``: a torchao float8 transformer, NF4 T5 and regional compilation, every component resident;
- ``c``: the best hand-built configuration of the new knobs under 16 GiB of device memory, enforced (the
  trial's memory limit): the float8 transformer resident, CLIP and the NF4 T5 released after encoding, the VAE
  tiled, regional compilation with fullgraph, a channels-last denoiser and the flux-fast Inductor profile;
  the memory model's prediction (calibrated, as a study's, on the cases measured before it) is printed
  and recorded;
- ``d``: ``c``'s knobs without a cap and with every fast-path knob: everything resident, fused QKV projections
  and cuDNN attention (where the probe finds it).

A case the space excludes here is recorded with the space's reason (status ``excluded``), never run. Writes
``OUT/NAME.json`` after each case, and ``OUT/results.json`` and ``OUT/README.md`` (latency, per-step time,
device peak, PSNR, cold start and speed-up over ``a``) after each case too, so a command stopped by its time
limit (or ``timeout -s INT``) keeps what finished; a rerun skips the cases recorded with status ok (in OUT or a
``--recorded`` folder).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qco_tune.core.config import AttentionBackend, QuantBackend, TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import Capabilities, TrialRequest
from qco_tune.core.spec import spec_for_model
from qco_tune.loop.summary import strict_json
from qco_tune.tools.gpu_full_size import (
    Case,
    carry_reference,
    case_summary,
    materialize,
    printer,
    reference_folder,
    tiny_case,
)
from qco_tune.tools.recording import RESULTS, case_parser, chosen_cases, load_recorded, needs_gpu, open_command

GIB = 2**30
PRESET = "flux.1-dev"
CAP = 16 * GIB
"""Case ``c``'s device memory limit."""
RECIPE = "quantization + compile"
FP8_NF4: tuple[tuple[str, QuantBackend], ...] = (("text_encoder_2", "bnb_nf4"), ("transformer", "torchao_fp8dq"))
B = TrialConfig(quantization=FP8_NF4, compile="regional")
C = dataclasses.replace(
    B,
    placement=(("text_encoder", "released"), ("text_encoder_2", "released")),
    vae_tiling=True,
    fullgraph=True,
    denoiser_channels_last=True,
    inductor_profile="flux-fast",
)
D = dataclasses.replace(C, placement=(), vae_tiling=False, fuse_qkv=True)
FAST_ATTENTION: AttentionBackend = "_native_cudnn"
"""``d``'s attention backend, where the probe finds it usable (else the default)."""

EXPECTED_S = {"reference": 90.0, "a": 300.0, "b": 270.0, "c": 300.0, "d": 320.0}
"""Seconds each case is expected to take on an H200, child start to result (cold compilation: the float8
transformer's about 200 s; ``studies/results/flux-dev-24gib/``)."""
MATERIALIZE_S = 90.0
MARGIN_S = 20.0
LIMITS = {"c": CAP}
"""The cases measured under a device memory limit."""


def cases(caps: Capabilities, tiny: bool) -> list[Case]:
    """The proof's cases on this machine (``--tiny``: on the tiny FLUX preset, at its workload)."""
    preset = "tiny-flux" if tiny else PRESET
    d = D
    if FAST_ATTENTION in caps.attention_backends:
        d = dataclasses.replace(D, attention_backend=FAST_ATTENTION)
    pool = [
        Case("reference", PRESET, TrialConfig(), EXPECTED_S["reference"]),
        Case("a", PRESET, guide_recipe(preset, caps) or TrialConfig(), EXPECTED_S["a"]),
        Case("b", PRESET, B, EXPECTED_S["b"]),
        Case("c", PRESET, C, EXPECTED_S["c"]),
        Case("d", PRESET, d, EXPECTED_S["d"]),
    ]
    return [tiny_case(c) for c in pool] if tiny else pool


def _space(preset: str, caps: Capabilities) -> Any:
    from qco_tune.search.space import SearchSpace

    spec = spec_for_model(preset)
    return SearchSpace.build(spec, get_preset(preset).model_info(), caps), spec


def guide_recipe(preset: str, caps: Capabilities) -> TrialConfig | None:
    """The seeded "quantization + compile" recipe of ``preset``'s space here (its fallback backend if NF4
    does not run here); None if the space seeds none here."""
    space, _ = _space(preset, caps)
    return next((c for label, c in space.baselines() if label.split(" (")[0] == RECIPE), None)


def violations(case: Case, caps: Capabilities) -> list[str]:
    space, _ = _space(case.preset, caps)
    if case.name == "a" and guide_recipe(case.preset, caps) is None:
        return [f'the space seeds no "{RECIPE}" recipe here']
    return list(space.violations(case.config))


def prediction(
    case: Case,
    caps: Capabilities,
    limit: int | None,
    measured: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The memory model's prediction for ``case`` (device bytes, its account, whether it is under ``limit``),
    calibrated as a study calibrates it on the cases this proof has measured here (``measured``: their JSON)."""
    from qco_tune.core.records import Measurement
    from qco_tune.search import memory
    from qco_tune.search.calibration import fit_configs
    from qco_tune.search.memory_terms import Calibration

    space, spec = _space(case.preset, caps)
    spec = dataclasses.replace(spec, vram_budget=limit or spec.vram_budget)
    points = []
    for data in measured:
        m = Measurement.from_dict(data.get("measurement") or {})
        peak = (
            m.memory_for(spec.memory_metric)
            if m.status == "ok" and m.device == ("cuda" if caps.cuda else "cpu")
            else None
        )
        if peak:
            points.append((TrialConfig.from_dict(data["config"]), float(peak)))
    calibration = Calibration(device=fit_configs(space.model, spec, caps, points)) if points and caps.cuda else None
    p = memory.predict(space.model, case.config, spec, caps, calibration)
    under = None if p.device_bytes is None or limit is None else p.device_bytes <= limit
    return {
        "device_gib": p.device_bytes / GIB if p.device_bytes else None,
        "detail": p.detail,
        "under_limit": under,
        "calibrated_on": len(points) if calibration else 0,
    }


def speedups(results: dict[str, dict[str, Any]]) -> None:
    """Each ok case's speed-up over ``a`` (latency and per-step time), in place."""
    base = results.get("a") or {}
    for data in results.values():
        for key, ratio in (("latency_s", "speedup_vs_a"), ("s_per_step", "step_speedup_vs_a")):
            mine, theirs = data.get(key), base.get(key)
            data[ratio] = round(theirs / mine, 3) if mine and theirs and data.get("status") == "ok" else None


def _fmt(data: dict[str, Any], key: str, spec: str) -> str:
    value = data.get(key)
    if key == "psnr_db" and value is None and data.get("status") == "ok" and data.get("name") == "reference":
        return "inf"
    return "-" if value is None else format(value, spec)


def write_results(out: Path, order: list[str], folders: list[Path], where: dict[str, Any]) -> dict[str, Any]:
    """``results.json`` and ``README.md`` from every case's JSON found in ``out`` or ``folders``."""
    results: dict[str, dict[str, Any]] = {}
    for name in order:
        for folder in (out, *folders):
            try:
                results[name] = json.loads((folder / f"{name}.json").read_text())
                break
            except (OSError, ValueError):
                continue
    speedups(results)
    data = {"cases": results, **where}
    (out / "results.json").write_text(json.dumps(strict_json(data), indent=2, default=str))
    rows = [
        f"| {n} | {d.get('configuration', '-')} | {d.get('status')} | {_fmt(d, 'latency_s', '.3f')} "
        f"| {_fmt(d, 's_per_step', '.4f')} | {_fmt(d, 'peak_device_gib', '.2f')} "
        f"| {_fmt(d, 'limit_gib', '.0f')} | {_fmt(d, 'predicted_device_gib', '.2f')} | {_fmt(d, 'psnr_db', '.1f')} "
        f"| {_fmt(d, 'first_call_s', '.1f')} | {_fmt(d, 'speedup_vs_a', '.2f')} "
        f"| {_fmt(d, 'step_speedup_vs_a', '.2f')} | {d.get('reason') or ''} |"
        for n, d in results.items()
    ]
    missing = [n for n in order if n not in results]
    text = (
        "# The fast path, side by side\n\n"
        "Each case one trial through qco-tune's trial runner (`python -m qco_tune.tools.fast_path_proof`). "
        "latency: median of the timed calls; device peak: NVML; limit: the trial's enforced device memory "
        "limit; predicted: the memory model; PSNR of the decoded output against `reference`; cold start: the "
        "first call (cold compilation cache); speed-up: `a`'s latency (per step) / the case's.\n\n"
        "| case | configuration | status | latency s | s/step | device peak GiB | limit GiB | predicted GiB "
        "| PSNR dB | cold start s | speed-up vs a | per step vs a | reason |\n"
        + "|---" * 13
        + "|\n"
        + "\n".join(rows)
        + "\n"
        + (f"\nNot recorded yet: {', '.join(missing)}.\n" if missing else "")
        + f"\nWhere: {where.get('gpu') or 'cpu'}; preset {where.get('preset')}.\n"
    )
    (out / "README.md").write_text(text)
    return data


def _run(case: Case, caps: Capabilities, command: Any, reference: Path, save: bool, timed: int) -> Any:
    from qco_tune.measure.runner import run_trial

    preset = get_preset(case.preset)
    request = TrialRequest(
        model=preset.model_info(),
        config=case.config,
        workload=case.workload or preset.workload,
        dtype="bfloat16",
        device="cuda" if caps.cuda else "cpu",
        memory_limit=LIMITS.get(case.name) if caps.cuda else None,
        timed_calls=timed,
        max_timed_calls=timed + 1,
        warmup_calls=1,
        cache_dir=str(command.cache),
        fresh_compile_cache=True,  # each case's cold start is its own
        reference_dir=str(reference),
        save_reference=save,
    )
    timeout = max(60.0, command.left() - MARGIN_S)
    print(f"{case.name}: {case.config.describe()} on {case.preset} (limit {timeout:.0f} s)", flush=True)
    return run_trial(request, timeout=timeout, on_phase=printer(case.name))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases; SIGINT and SIGTERM stop it keeping what finished (exit 130), also where the
    command was started with SIGINT ignored (a background job of a script, as ``timeout -s INT`` runs it)."""
    from qco_tune.loop.signals import stop_signals_as_interrupt

    with stop_signals_as_interrupt():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    names = ["reference", "a", "b", "c", "d"]
    parser = case_parser(__doc__, [Case(n, PRESET, TrialConfig(), 0) for n in names], "folder for the results")
    parser.add_argument("--timed-calls", type=int, default=3)
    args = parser.parse_args(argv)
    if args.only:  # --only a,b as well as --only a b
        args.only = [n for part in args.only for n in part.split(",") if n]
    command = open_command(args, args.out if args.tiny else RESULTS / "fast-path-h200")  # a dry run: its own only
    chosen = {c.name for c in chosen_cases(parser, [Case(n, PRESET, TrialConfig(), 0) for n in names], args.only)}

    from qco_tune.core.presets.cache import is_materialized
    from qco_tune.measure.runner import TrialInterrupted, probe_capabilities

    caps = probe_capabilities()
    if needs_gpu(caps.cuda, args.tiny):
        return 2
    pool = cases(caps, args.tiny)
    preset = pool[0].preset
    where = {"gpu": caps.gpu_name, "versions": dict(caps.versions), "host": caps.host, "preset": preset}
    recorded = [command.out, *command.recorded]
    print(f"{caps.gpu_name or 'cpu'}; cache {command.cache}; budget {args.budget_s:.0f} s", flush=True)
    materialized: dict[str, Any] = {}
    try:
        for case in pool:
            if case.name not in chosen and case.name != "reference":
                continue
            if not args.rerun and load_recorded(case.name, recorded):
                print(f"{case.name}: recorded already, skipped", flush=True)
                continue
            is_reference = case.name == "reference"
            entry: dict[str, Any] = {"name": case.name, "configuration": case.config.describe()}
            entry["limit_gib"] = LIMITS[case.name] / GIB if case.name in LIMITS else None
            finished = [d for n in names if (d := load_recorded(n, recorded)) and d.get("preset") == case.preset]
            predicted = prediction(case, caps, LIMITS.get(case.name), finished)
            entry["predicted_device_gib"], entry["prediction"] = predicted["device_gib"], predicted
            print(f"{case.name}: memory model: {predicted['detail']}", flush=True)
            if predicted["under_limit"] is False:
                print(f"{case.name}: predicted over its {entry['limit_gib']:.0f} GiB limit (the limit is enforced)")
            broken = violations(case, caps)
            if broken:
                entry.update(status="excluded", reason="; ".join(broken), config=case.config.to_dict())
                print(f"{case.name}: excluded by the space here: {entry['reason']}", flush=True)
                (command.out / f"{case.name}.json").write_text(json.dumps(strict_json(entry), indent=2))
                write_results(command.out, names, command.recorded, where)
                continue
            need = case.expected_s + (0 if is_materialized(case.preset, command.cache) else MATERIALIZE_S)
            if not command.fits(case.name, need):
                break
            mat = materialize(case.preset, command.cache, "cuda" if caps.cuda else "cpu", materialized)
            reference, have_reference = reference_folder(case.preset, command.cache, recorded)
            if not is_reference and not have_reference:
                print(f"{case.name}: no reference output here (run the reference case first)", flush=True)
            m = _run(case, caps, command, reference, is_reference and not have_reference, args.timed_calls)
            data = {**case_summary(m, case, case.workload or get_preset(case.preset).workload), **entry}
            data.update(status=m.status, reason=m.reason, materialize=mat, **where)
            if m.latencies_s:
                data["latency_s"] = statistics.median(m.latencies_s)
            (command.out / f"{case.name}.json").write_text(json.dumps(strict_json(data), indent=2, default=str))
            if is_reference and not have_reference and m.status == "ok":
                carry_reference(reference, command.out, case.preset)
            write_results(command.out, names, command.recorded, where)
            keys = ("status", "latency_s", "s_per_step", "peak_device_gib", "first_call_s", "psnr_db", "reason")
            print(f"{case.name}: " + ", ".join(f"{k}={data.get(k)}" for k in keys), flush=True)
    except (TrialInterrupted, KeyboardInterrupt):
        print("interrupted: the finished cases are kept; run the command again to go on", flush=True)
        write_results(command.out, names, command.recorded, where)
        return 130
    except (OSError, ValueError, RuntimeError) as exc:  # no room, or materialising failed: nothing more runs
        print(f"stopping: {exc}", file=sys.stderr, flush=True)
    write_results(command.out, names, command.recorded, where)
    print(f"done in {time.monotonic() - command.started:.0f} s; {command.out / 'README.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
