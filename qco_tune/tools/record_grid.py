"""Record the search benchmark's grid: every configuration of a reduced space, measured once, resumably.

    python3 -m qco_tune.tools.record_grid OUT.jsonl [--resume FILE] [--budget-s 540] [--limit N] [--tiny]
                                                     [--gpus N]

Runs each configuration of ``qco_tune.bench.grid``'s space (``grid_spec``, narrowed by ``in_grid``: the
transformer of ``flux.1-dev-reduced`` unquantized, bitsandbytes NF4, torchao int8 weight-only or
torchao float8; no compile, regional compile in the default and autotuning modes, whole-denoiser
compile; no offloading, model CPU offload, leaf-level group offloading without and with a stream) at
512x512 in 4 steps, as one trial each through ``qco_tune.measure.runner.run_trial`` (a fresh child process,
the spec's warm-up and timed calls, no memory cap: the budget is applied by the replay). Every
trial starts with empty torch.compile caches (Inductor and Triton), so its cost is its own and does
not depend on the order of recording. Each record (``qco_tune.bench.grid``): the configuration, status and
reason, latency, peak memory as the budget counts it (NVML, CUDA context included), cold start (the
first call), load time, the trial's seconds from child start to result, and the fingerprint (GPU,
versions).

Resumable within commands of a few minutes: OUT starts as a copy of ``--resume`` (default
``studies/results/search-grid/grid.jsonl`` where it exists); configurations already there are skipped;
the rest run cheapest first (uncompiled, then regional, whole, autotuned compilation), and one whose
expected duration (the slowest recorded of its kind, else an estimate) does not fit in what is left
of ``--budget-s`` is not started. A trial cut short by the command's time (not by ``--trial-timeout``)
is not recorded: the next command runs it first. Prints ``grid complete`` when nothing is left.

``--gpus N`` records on N GPUs of one host at once: the configurations left are shared out so that the
GPUs' expected seconds are even (longest first onto the least loaded), each GPU runs its share in a
process of its own (``CUDA_VISIBLE_DEVICES``) writing ``OUT.gpuK``, and their records are merged into
OUT at the end. Trials on different GPUs share the host's CPUs and memory bandwidth; offloading
trials, which copy weights from host memory every step, are the ones that may read slower than alone.

``--tiny`` is a dry run of the plumbing with the tiny FLUX preset, on the CPU too (where the space
shrinks to what runs there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from qco_tune.bench.grid import (
    GridRecord,
    append_record,
    grid_spec,
    header_dict,
    in_grid,
    recorded_keys,
)
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import TrialRequest
from qco_tune.tools.recording import RESULTS, needs_gpu

DEFAULT_RESUME = RESULTS / "search-grid" / "grid.jsonl"
EXPECTED_S = {
    "none": 40.0,
    "regional/default": 100.0,
    "full/default": 150.0,
    "regional/max-autotune-no-cudagraphs": 240.0,
}
"""Seconds a trial of each kind is expected to take on an H100 (child start to result, cold caches),
until one of its kind has been recorded."""
TINY_SCALE = 0.5
MARGIN_S = 15.0
SETUP_S = 60.0
"""Probing the machine and materialising the preset, before the first trial of a command."""


def kind(config: TrialConfig) -> str:
    return "none" if config.compile == "none" else f"{config.compile}/{config.compile_mode}"


def _expected(config: TrialConfig, seen: dict[str, float], tiny: bool) -> float:
    prior = EXPECTED_S.get(kind(config), max(EXPECTED_S.values())) * (TINY_SCALE if tiny else 1.0)
    return seen.get(kind(config), prior)


def shares(todo: list[TrialConfig], n: int, expected: dict[str, float]) -> list[list[TrialConfig]]:
    """``todo`` split into ``n`` lists of about equal expected seconds, each kept in ``todo``'s order."""
    loads = [0.0] * n
    owner: dict[str, int] = {}
    for config in sorted(todo, key=lambda c: -expected[c.key()]):
        k = loads.index(min(loads))
        owner[config.key()] = k
        loads[k] += expected[config.key()]
    return [[c for c in todo if owner[c.key()] == k] for k in range(n)]


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N, e.g. 0/4") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"{text!r}: K must be in 0..N-1")
    return k, n


def _stream(proc: subprocess.Popen[str], prefix: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"{prefix}{line}", end="", flush=True)


def _record_on_gpus(args: argparse.Namespace, n: int, left_s: float) -> None:
    """Run one recorder per GPU on its share of what is left, then merge their records into OUT."""
    parts = [args.out.with_name(f"{args.out.name}.gpu{k}") for k in range(n)]
    for part in parts:
        part.unlink(missing_ok=True)  # each share starts from OUT as it is now
    procs = []
    for k, part in enumerate(parts):
        command = [sys.executable, "-m", "qco_tune.tools.record_grid", str(part), "--resume", str(args.out)]
        command += ["--shard", f"{k}/{n}", "--budget-s", f"{left_s:.0f}", "--trial-timeout", str(args.trial_timeout)]
        command += (["--limit", str(args.limit)] if args.limit is not None else []) + (["--tiny"] if args.tiny else [])
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(k)}
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        thread = threading.Thread(target=_stream, args=(proc, f"[gpu{k}] "), daemon=True)
        thread.start()
        procs.append((proc, thread))
    for proc, thread in procs:
        proc.wait()
        thread.join()
    have = recorded_keys(args.out)
    with args.out.open("a", encoding="utf-8") as merged:
        for part in parts:
            if not part.exists():
                continue
            for line in part.read_text(encoding="utf-8").splitlines()[1:]:
                if line.strip() and (key := str(json.loads(line)["key"])) not in have:
                    merged.write(line + "\n")
                    have[key] = "merged"
            part.unlink()


def _seen_costs(path: Path) -> dict[str, float]:
    """The slowest recorded trial of each kind, with a margin."""
    seen: dict[str, float] = {}
    if not path.exists():
        return seen
    for line in path.read_text().splitlines()[1:]:
        if line.strip():
            data = json.loads(line)
            k = kind(TrialConfig.from_dict(data["config"]))
            seen[k] = max(seen.get(k, 0.0), float(data["trial_s"]) * 1.15)
    return seen


def _prepare_out(out: Path, resume: Path | None, header: dict[str, Any]) -> None:
    """OUT exists afterwards, with a header that matches this recording (copied from ``resume`` if given)."""
    if not out.exists() and resume is not None and resume.exists() and resume.resolve() != out.resolve():
        shutil.copyfile(resume, out)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(header) + "\n")
        return
    first = out.read_text().splitlines()[0]
    stored = json.loads(first)
    for key in ("format", "spec", "model"):
        if stored.get(key) != header.get(key):
            raise SystemExit(f"error: {out} was recorded with another {key}; use a new OUT file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the grid file to write (JSON lines)")
    parser.add_argument("--resume", type=Path, help=f"an earlier grid to continue (default {DEFAULT_RESUME})")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop before this many seconds (default 540)")
    parser.add_argument("--trial-timeout", type=float, default=420.0, help="a trial past this is a hang (default 420)")
    parser.add_argument("--limit", type=int, help="record at most this many configurations in this command")
    parser.add_argument("--tiny", action="store_true", help="a dry run with the tiny FLUX preset (CPU too)")
    parser.add_argument("--gpus", type=int, default=1, help="record on this many GPUs of the host at once (default 1)")
    parser.add_argument("--shard", type=_parse_shard, help=argparse.SUPPRESS)  # K/N: one GPU's share (--gpus)
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error("--gpus must be at least 1")
    started = time.monotonic()
    deadline = started + args.budget_s
    cache = Path(os.environ.setdefault("QCO_CACHE", "/dev/shm/qco"))
    resume = args.resume if args.resume is not None else (DEFAULT_RESUME if DEFAULT_RESUME.exists() else None)

    from qco_tune.core.presets import get_preset
    from qco_tune.loop.setup import fingerprint
    from qco_tune.measure.materializing import materialize_in_child
    from qco_tune.measure.runner import probe_capabilities, run_trial
    from qco_tune.search.space import SearchSpace

    caps = probe_capabilities()
    if args.gpus > 1 and caps.cuda and args.gpus > caps.gpu_count:
        print(f"--gpus {args.gpus}: this host has {caps.gpu_count} GPU(s)", file=sys.stderr)
        return 2
    if needs_gpu(caps.cuda, args.tiny, "the grid needs one"):
        return 2
    spec = grid_spec()
    if args.tiny:
        spec = grid_spec(model="tiny-flux", workload=get_preset("tiny-flux").workload)
    preset = get_preset(spec.model)
    model = preset.model_info()
    space = SearchSpace.build(spec, model, caps)
    configs = sorted((c for c in space.enumerate() if in_grid(c)), key=lambda c: list(EXPECTED_S).index(kind(c)))
    note = "dry run (--tiny)" if args.tiny else "recorded with qco_tune.tools.record_grid"
    _prepare_out(args.out, resume, header_dict(spec, model, caps, spec.vram_budget, note))
    done = recorded_keys(args.out)
    todo = [c for c in configs if c.key() not in done]
    where = caps.gpu_name or "cpu"
    print(f"{where}: {len(configs)} configurations, {len(done)} recorded, {len(todo)} to go", flush=True)
    if not todo:
        print("grid complete", flush=True)
        return 0
    seen = _seen_costs(args.out)
    if args.shard is not None:
        k, n = args.shard
        todo = shares(todo, n, {c.key(): _expected(c, seen, args.tiny) for c in todo})[k]
        print(f"share {k} of {n}: {len(todo)} configuration(s)", flush=True)
    materialize_in_child(spec.model, cache, device=caps.device)  # once, before the shares start
    if args.gpus > 1:
        _record_on_gpus(args, args.gpus, deadline - time.monotonic())
        todo = []
    for ran, config in enumerate(todo):
        if args.limit is not None and ran >= args.limit:
            print(f"stopping: --limit {args.limit} reached", flush=True)
            break
        need = _expected(config, seen, args.tiny)
        left = deadline - time.monotonic()
        if need + MARGIN_S > left:
            print(f"stopping before {config.describe()}: it needs about {need:.0f} s and {left:.0f} s are left")
            break
        request = TrialRequest(
            model=model,
            config=config,
            workload=spec.workload,
            dtype=spec.dtype,
            device=caps.device,  # type: ignore[arg-type]
            memory_limit=None,  # measure what each configuration needs; the replay applies the budget
            timed_calls=spec.timed_calls,
            max_timed_calls=spec.max_timed_calls,
            warmup_calls=spec.warmup_calls,
            cache_dir=str(cache),
            fresh_compile_cache=True,  # a cold start from scratch: the cost is the configuration's own
        )
        timeout = min(args.trial_timeout, left - MARGIN_S)
        print(f"{config.describe()} (expected {need:.0f} s, limit {timeout:.0f} s)", flush=True)
        m = run_trial(request, timeout=timeout)
        if m.status == "timeout" and timeout < args.trial_timeout:
            print("  cut short by this command's time: not recorded, the next command runs it first", flush=True)
            break
        trial_s = float(m.extra.get("wall_s") or 0.0)
        memory = m.memory_for(spec.memory_metric) if m.status == "ok" else None
        record = GridRecord(config, m, trial_s, memory, fingerprint(caps))
        append_record(args.out, record)
        seen[kind(config)] = max(seen.get(kind(config), 0.0), trial_s * 1.15)
        shown = {k: record.to_dict()[k] for k in ("status", "latency_s", "memory_bytes", "first_call_s", "trial_s")}
        print(f"  {json.dumps(shown)}" + (f" {m.reason}" if m.reason else ""), flush=True)
    if args.shard is not None:
        print(f"share {args.shard[0]} done in {time.monotonic() - started:.0f} s", flush=True)
        return 0
    left_configs = [c for c in configs if c.key() not in recorded_keys(args.out)]
    if not left_configs:
        print("grid complete", flush=True)
    else:
        expected = sum(_expected(c, seen, args.tiny) for c in left_configs)
        print(f"{len(left_configs)} configuration(s) left, about {expected:.0f} s; run again to continue", flush=True)
    print(f"done in {time.monotonic() - started:.0f} s: {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
