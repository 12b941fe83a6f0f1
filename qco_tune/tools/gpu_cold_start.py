"""First against repeated cold start of one compile configuration, through the study's compilation cache.

    python3 -m qco_tune.tools.gpu_cold_start OUT [--only NAME ...] [--budget-s 540] [--tiny] [--rerun]

For each case below: an empty compilation cache (``<QCO_CACHE>/compile/...``, keyed as a study's
is: study, GPU kind, torch version), then the same configuration runs twice as trials of that cache,
each in a fresh child process (``qco_tune.measure.runner.run_trial``), as two trials of one study meet it.
The first compiles from scratch; the second finds Inductor's FX graph and autograd caches, the
autotuning results and Triton's kernels on disk. ``OUT/NAME.json`` records both measurements: the
first call (cold start, compilation included), load time, wall time of the whole trial, the cache's
state (cold/warm, files, FX graph and autograd cache hits and misses) and the speed-up of the repeat.
``OUT/summary.md`` and ``OUT/summary.json`` tabulate every case recorded.

Cheap by design: the real FLUX.1-dev (random weights) at its real width and 1024x1024, but 4 steps,
no warm-up and one timed call, since only the cold start is wanted. Presets are materialised into
``QCO_CACHE`` (default ``/dev/shm/qco``) first.

Resumable within 10-minute commands: a case recorded with both runs ok (in OUT or a ``--recorded``
folder, default ``studies/results/cold_start``) is skipped; a case whose expected duration does not
fit in what is left of ``--budget-s`` is not started. A case is atomic (its two runs share a cache that
a fresh machine would not have), so a command that stops mid-case leaves it to the next command.
``--tiny`` runs the same plumbing on the tiny preset (on a CPU: compilation with a C compiler, and no
bitsandbytes, so its quantized cases run unquantized).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qco_tune.core.config import QuantBackend, TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import TrialRequest
from qco_tune.core.studyspec import Workload
from qco_tune.loop.summary import strict_json
from qco_tune.tools.recording import RESULTS, case_parser, chosen_cases, load_recorded, needs_gpu, open_command

GIB = 2**30
NF4_FLUX: tuple[tuple[str, QuantBackend], ...] = (("text_encoder_2", "bnb_nf4"), ("transformer", "bnb_nf4"))


@dataclass(frozen=True)
class Case:
    name: str
    preset: str
    config: TrialConfig
    expected_s: float
    """Seconds both runs are expected to take on an H100 (for the time budget)."""
    design_first_call_s: float | None = None
    """An earlier cold-start figure for the same compilation (DESIGN.md: one step of the FLUX.1-dev
    transformer; studies/results/full_size: the whole pipeline), for comparison."""
    default: bool = True


CASES = (
    Case("flux-bf16-regional", "flux.1-dev", TrialConfig(compile="regional"), 170, 18),
    Case("flux-nf4-full", "flux.1-dev", TrialConfig(quantization=NF4_FLUX, compile="full"), 330, 109),
    # The guide's "quantization + torch.compile" recipe; max-autotune's first compile alone may take minutes.
    Case(
        "flux-nf4-full-max-autotune",
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX, compile="full", compile_mode="max-autotune", fullgraph=True),
        450,
        224,  # studies/results/full_size: the whole pipeline's first call with this compilation (cold)
        default=False,
    ),
    Case(
        "flux-fp8-regional",
        "flux.1-dev",
        TrialConfig(quantization=(("transformer", "torchao_fp8dq"),), compile="regional"),
        520,
        387,
        default=False,
    ),
)

MATERIALIZE_S = {"flux.1-dev": 90.0}
"""Expected seconds to materialise on an H100 into /dev/shm (import, build, save)."""
STEPS = 4
TINY = {"flux.1-dev": "tiny-flux"}


def _tiny(case: Case, cuda: bool) -> Case:
    """``case`` on the tiny preset; without CUDA, bitsandbytes (which needs a GPU) is left out."""
    config = case.config
    if not cuda:
        config = replace(config, quantization=tuple((c, b) for c, b in config.quantization if not b.startswith("bnb")))
    return replace(case, preset=TINY[case.preset], config=config, expected_s=case.expected_s / 3)


def _run(case: Case, run: int, request: TrialRequest, timeout: float) -> Any:
    from qco_tune.measure.runner import run_trial

    def show(phase: str) -> None:
        print(f"  [{case.name} #{run}] {phase}", flush=True)

    started = time.perf_counter()
    m = run_trial(request, timeout=timeout, on_phase=show)
    cache = m.extra.get("compile_cache") or {}
    print(
        f"  [{case.name} #{run}] {m.status}: first call {m.first_call_s} s, load {m.load_s} s, "
        f"trial {time.perf_counter() - started:.1f} s, cache {cache.get('state')} "
        f"(FX graph hits {cache.get('fx_graph_hits')}, misses {cache.get('fx_graph_misses')}) {m.reason or ''}",
        flush=True,
    )
    return m


def _summary(case: Case, workload: Workload, runs: list[Any], cache: Path) -> dict[str, Any]:
    first, second = [*runs, None, None][:2]

    def figures(m: Any) -> dict[str, Any] | None:
        if m is None:
            return None
        return {
            "status": m.status,
            "reason": m.reason,
            "first_call_s": m.first_call_s,
            "load_s": m.load_s,
            "latency_s": m.latency_s,
            "wall_s": m.extra.get("wall_s"),
            "compile_cache": m.extra.get("compile_cache"),
            "peak_device_gib": m.peak_device_bytes / GIB if m.peak_device_bytes else None,
            "measurement": m.to_dict(),
        }

    ok = all(m is not None and m.status == "ok" for m in (first, second))
    speedup = first.first_call_s / second.first_call_s if ok and second.first_call_s else None
    saved = first.first_call_s - second.first_call_s if ok else None
    return {
        "name": case.name,
        "preset": case.preset,
        "configuration": case.config.describe(),
        "config": case.config.to_dict(),
        "workload": dataclasses.asdict(workload),
        "cache_dir": str(cache),
        "status": "ok" if ok else "failed",
        "first": figures(first),
        "repeat": figures(second),
        "first_call_s": first.first_call_s if first is not None else None,
        "repeat_first_call_s": second.first_call_s if second is not None else None,
        "cold_start_speedup": speedup,
        "cold_start_saved_s": saved,
        "design_first_call_s": case.design_first_call_s,
    }


def _write_summary(out: Path, folders: list[Path]) -> None:
    rows, records = [], []
    for case in CASES:
        data = next((d for f in (out, *folders) if (d := load_recorded(case.name, [f])) is not None), None)
        if data is None:
            continue
        records.append(data)

        def fmt(value: Any, spec: str = ".1f") -> str:
            return "-" if value is None else format(value, spec)

        first, repeat = data["first"] or {}, data["repeat"] or {}
        rows.append(
            f"| {case.name} | {data['configuration']} | {fmt(data['first_call_s'])} | "
            f"{fmt(data['repeat_first_call_s'])} | {fmt(data['cold_start_speedup'], '.2f')}x | "
            f"{fmt(first.get('wall_s'))} | {fmt(repeat.get('wall_s'))} | "
            f"{(repeat.get('compile_cache') or {}).get('fx_graph_hits', '-')} | "
            f"{fmt(data['design_first_call_s'], '.0f')} |"
        )
    header = (
        "| case | configuration | first call s (empty cache) | first call s (repeat) | speed-up | trial s (first) "
        "| trial s (repeat) | FX graph cache hits (repeat) | earlier first call s |\n" + "|---" * 9 + "|\n"
    )
    (out / "summary.md").write_text(header + "\n".join(rows) + "\n")
    (out / "summary.json").write_text(json.dumps(strict_json(records), indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = case_parser(__doc__, CASES, "folder for NAME.json and the summaries")
    args = parser.parse_args(argv)
    command = open_command(args, RESULTS / "cold_start")
    out, recorded, cache = command.out, command.recorded, command.cache
    cases = chosen_cases(parser, CASES, args.only)

    from qco_tune.core.paths import compile_cache_dir
    from qco_tune.core.presets.cache import check_disk, is_materialized
    from qco_tune.loop.setup import gpu_kind
    from qco_tune.measure.materializing import materialize_in_child
    from qco_tune.measure.runner import probe_capabilities

    caps = probe_capabilities()
    if needs_gpu(caps.cuda, args.tiny):
        return 2
    if args.tiny:
        cases = [_tiny(c, caps.cuda) for c in cases]
    torch_version = dict(caps.versions).get("torch")
    print(f"{gpu_kind(caps)}; torch {torch_version}; cache {cache}; budget {args.budget_s:.0f} s", flush=True)
    for case in cases:
        if not args.rerun and load_recorded(case.name, [out, *recorded]):
            print(f"{case.name}: recorded already, skipped", flush=True)
            continue
        need = case.expected_s + (0 if is_materialized(case.preset, cache) else MATERIALIZE_S.get(case.preset, 30))
        if not command.fits(case.name, need):
            break
        if not is_materialized(case.preset, cache):
            try:
                check_disk(case.preset, cache)
                device = "cuda" if caps.cuda else "cpu"
                result = materialize_in_child(case.preset, cache, device=device, on_phase=lambda p: print(f"  {p}"))
            except (OSError, ValueError, RuntimeError) as exc:
                print(f"stopping: {exc}", file=sys.stderr, flush=True)
                break
            print(f"materialised {case.preset} in {result.seconds} s", flush=True)
        compile_cache = compile_cache_dir(f"cold-start-{case.name}", gpu_kind(caps), torch_version, cache)
        shutil.rmtree(compile_cache, ignore_errors=True)  # the first run starts from an empty cache
        preset = get_preset(case.preset)
        workload = replace(preset.workload, steps=min(STEPS, preset.workload.steps))
        request = TrialRequest(
            model=preset.model_info(),
            config=case.config,
            workload=workload,
            dtype="bfloat16",
            device="cuda" if caps.cuda else "cpu",
            timed_calls=1,
            max_timed_calls=1,
            warmup_calls=0,
            cache_dir=str(cache),
            compile_cache_dir=str(compile_cache),
        )
        print(f"{case.name}: {case.config.describe()} on {case.preset}, {workload.steps} steps", flush=True)
        runs = []
        for run in (1, 2):
            timeout = max(60.0, command.left())
            m = _run(case, run, request, timeout)
            runs.append(m)
            if m.status != "ok":
                break
        data = _summary(case, workload, runs, compile_cache)
        data.update(gpu=caps.gpu_name or "cpu", versions=dict(caps.versions), host=caps.host, tiny=args.tiny)
        (out / f"{case.name}.json").write_text(json.dumps(strict_json(data), indent=2, default=str))
        print(
            f"{case.name}: {data['status']}; first call {data['first_call_s']} s with an empty cache, "
            f"{data['repeat_first_call_s']} s repeated ({data['cold_start_speedup']})",
            flush=True,
        )
    _write_summary(out, recorded)
    command.done()
    return 0


if __name__ == "__main__":
    sys.exit(main())
