"""Full-size random-weight pipelines on a GPU through the real trial runner, resumable within 10-minute commands.

    python3 -m qco_tune.tools.gpu_full_size OUT [--only NAME ...] [--budget-s 540] [--recorded DIR ...]

Materialises the presets it needs (``QCO_CACHE``, default ``/dev/shm/qco``: 128 GB of RAM-backed
disk on the GPU machine), then runs each configuration below as one trial (``qco_tune.measure.runner.run_trial``:
a fresh child process; text encoding, every denoising step and the VAE decode at the real
workload) and writes ``OUT/NAME.json``: latency, time per step, peak VRAM (NVML and allocator),
host RAM, load time, cold start (first call), fidelity against the bf16 reference of the same
preset and seed (PSNR of the decoded output, cosine of the final latents), how long materialising
took, and the DESIGN.md figure it should be near. ``OUT/summary.md`` tabulates every JSON found.

Resumable: a configuration already recorded with status ok (in OUT or a ``--recorded`` folder,
default ``studies/results/full_size``) is skipped; one whose expected duration does not fit in what
is left of ``--budget-s`` is not started (the command stops cleanly, the next one goes on). The
bf16 trial of a preset writes its reference output into the cache and, when small (FLUX.1-dev: 14 MB),
copies it to ``OUT/reference-PRESET/``; later commands find it in a ``--recorded`` folder (copy OUT
there between commands). A case whose reference is nowhere runs its preset's bf16 case first.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
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
NF4_WAN: tuple[tuple[str, QuantBackend], ...] = (("text_encoder", "bnb_nf4"), ("transformer", "bnb_nf4"))


@dataclass(frozen=True)
class Case:
    name: str
    preset: str
    config: TrialConfig
    expected_s: float
    """Seconds the trial is expected to take on an H100, child start to result (for the time budget)."""
    design_s_per_step: float | None = None
    """DESIGN.md's per-step figure for the same configuration (FLUX.1-dev transformer, one step, 1024x1024)."""
    workload: Workload | None = None
    """None: the preset's own workload."""
    default: bool = True
    """Run unless --only names others."""


WAN_FAST = Workload(
    prompt="a cat walks on the grass, realistic",
    height=480,
    width=832,
    frames=33,
    steps=4,
    guidance=5.0,
    max_sequence_length=512,
)
CASES = (
    Case("flux-bf16", "flux.1-dev", TrialConfig(), 120, 0.184),
    Case(
        "flux-group-leaf",
        "flux.1-dev",
        TrialConfig(offload="group_leaf", use_stream=True, non_blocking=True),
        200,
        0.516,
    ),
    # The guide's "quantization + torch.compile": bnb NF4 transformer and T5, then
    # transformer.compile(mode="max-autotune", fullgraph=True).
    Case(
        "flux-nf4-compile",
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX, compile="full", compile_mode="max-autotune", fullgraph=True),
        420,
        0.147,
    ),
    # A fallback if max-autotune's cold start does not fit a command: the DESIGN's own nf4 + full compile row.
    Case(
        "flux-nf4-compile-default",
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX, compile="full"),
        240,
        0.147,
        default=False,
    ),
    Case("flux-nf4", "flux.1-dev", TrialConfig(quantization=NF4_FLUX), 120, 0.199, default=False),
    Case("wan-bf16", "wan2.1-t2v-1.3b", TrialConfig(), 120, None, WAN_FAST),
    Case("wan-nf4", "wan2.1-t2v-1.3b", TrialConfig(quantization=NF4_WAN), 120, None, WAN_FAST),
)

MATERIALIZE_S = {"flux.1-dev": 90.0, "wan2.1-t2v-1.3b": 50.0}
"""Expected seconds to materialise on an H100 into /dev/shm (import, build, save)."""
MARGIN_S = 20.0


CARRY_MAX_BYTES = 32 * 2**20
"""References up to this size are copied into OUT, to be carried to the next command (FLUX: 14 MB;
Wan's 33 frames are 160 MB and stay in the cache, so both Wan cases run in one command)."""


def reference_folder(preset: str, cache: Path, recorded: list[Path]) -> tuple[Path, bool]:
    """(where the bf16 reference of ``preset`` is, whether it is there and made from these weights).

    A recorded one made from the same random weights (the preset's fingerprint) wins; else the
    cache's, which the bf16 case writes.
    """
    from qco_tune.core.presets.cache import marker, preset_folder

    weights = (marker(preset_folder(preset, cache)) or {}).get("fingerprint")
    own = cache / "references" / f"gpu-full-size-{preset}"
    for folder in (*[f / f"reference-{preset}" for f in recorded], own):
        try:
            made_with = json.loads((folder / "reference.json").read_text()).get("weights")
        except (OSError, ValueError):
            continue
        if made_with == weights or not (made_with and weights):
            return folder, True
        print(f"  {folder}: made from other random weights ({made_with} != {weights}), not used", flush=True)
    return own, False


def carry_reference(reference: Path, out: Path, preset: str) -> None:
    """Copy a small reference into OUT (``reference-PRESET/``) so that a later command finds it."""
    size = sum(f.stat().st_size for f in reference.iterdir() if f.is_file())
    if size <= CARRY_MAX_BYTES and reference.parent != out:
        shutil.copytree(reference, out / f"reference-{preset}", dirs_exist_ok=True)


def materialize(preset: str, cache: Path, device: str, log: dict[str, Any]) -> dict[str, Any]:
    from qco_tune.core.presets.cache import check_disk
    from qco_tune.measure.materializing import materialize_in_child

    if preset in log:
        return log[preset]
    check_disk(preset, cache)
    started = time.perf_counter()
    result = materialize_in_child(
        preset, cache, device=device, on_phase=lambda p: print(f"  [{preset}] {p}", flush=True)
    )
    log[preset] = {
        "seconds": result.seconds,
        "built_in_this_command": result.built,
        "wall_s": round(time.perf_counter() - started, 1),
        "path": str(result.path),
    }
    print(f"materialised {preset}: {log[preset]}", flush=True)
    return log[preset]


def case_summary(m: Any, case: Case, workload: Workload) -> dict[str, Any]:
    step = m.step_time_s
    design = case.design_s_per_step
    return {
        "name": case.name,
        "preset": case.preset,
        "configuration": case.config.describe(),
        "config": case.config.to_dict(),
        "workload": asdict(workload),
        "status": m.status,
        "reason": m.reason,
        "latency_s": m.latency_s,
        "latencies_s": list(m.latencies_s),
        "s_per_step": step,
        "design_s_per_step": design,
        "vs_design": round(step / design - 1, 3) if step and design else None,
        "first_call_s": m.first_call_s,
        "load_s": m.load_s,
        "peak_device_gib": m.peak_device_bytes / GIB if m.peak_device_bytes else None,
        "peak_allocated_gib": m.peak_allocated_bytes / GIB if m.peak_allocated_bytes else None,
        "peak_reserved_gib": m.peak_reserved_bytes / GIB if m.peak_reserved_bytes else None,
        "peak_host_gib": m.peak_host_bytes / GIB if m.peak_host_bytes else None,
        "psnr_db": m.psnr_db,
        "latent_cosine": m.latent_cosine,
        "reference": m.extra.get("reference"),
        "fidelity_error": m.extra.get("fidelity_error"),
        "wall_s": m.extra.get("wall_s"),
        "measurement": m.to_dict(),
    }


def _write_summary(out: Path, folders: list[Path]) -> None:
    rows = []
    for case in CASES:
        data = next(
            (json.loads(p.read_text()) for f in (out, *folders) if (p := f / f"{case.name}.json").is_file()), None
        )
        if data is None:
            continue

        def fmt(key: str, spec: str = ".3f", data: dict[str, Any] = data) -> str:
            value = data.get(key)
            if key == "psnr_db" and value is None and data.get("identical"):
                value = float("inf")  # strict JSON: an identical output's PSNR is null, with identical: true
            if isinstance(value, str):  # records written before that hold "inf"
                value = float(value)
            return "-" if value is None else format(value, spec)

        rows.append(
            f"| {case.name} | {data['configuration']} | {data['status']} | {fmt('latency_s')} | {fmt('s_per_step')} "
            f"| {fmt('design_s_per_step')} | {fmt('vs_design', '+.0%')} | {fmt('peak_device_gib', '.1f')} "
            f"| {fmt('peak_allocated_gib', '.1f')} | {fmt('peak_host_gib', '.1f')} | {fmt('load_s', '.1f')} "
            f"| {fmt('first_call_s', '.1f')} | {fmt('psnr_db', '.1f')} | {fmt('latent_cosine', '.5f')} "
            f"| {(data.get('materialize') or {}).get('seconds', '-')} |"
        )
    header = (
        "| case | configuration | status | latency s | s/step | DESIGN s/step | vs DESIGN | NVML peak GiB "
        "| allocated GiB | host GiB | load s | cold start s | PSNR dB | latent cos | materialise s |\n"
        + "|---" * 15
        + "|\n"
    )
    (out / "summary.md").write_text(header + "\n".join(rows) + "\n")


def printer(name: str) -> Any:
    """Prints a trial's phases as they come."""

    def show(phase: str) -> None:
        print(f"  [{name}] {phase}", flush=True)

    return show


TINY = {"flux.1-dev": "tiny-flux", "wan2.1-t2v-1.3b": "tiny-wan"}


def tiny_case(case: Case) -> Case:
    """``case`` on the tiny preset of the same family, at that preset's workload (a dry run)."""
    return replace(case, preset=TINY[case.preset], workload=None, expected_s=case.expected_s / 10)


def main(argv: list[str] | None = None) -> int:
    parser = case_parser(__doc__, CASES, "folder for NAME.json, summary.md and reference outputs")
    parser.add_argument("--timed-calls", type=int, default=2)
    args = parser.parse_args(argv)
    command = open_command(args, RESULTS / "full_size")
    out, recorded, cache = command.out, command.recorded, command.cache
    cases = chosen_cases(parser, CASES, args.only)

    from qco_tune.core.presets.cache import is_materialized
    from qco_tune.measure.runner import probe_capabilities, run_trial

    needed: set[str] = set()
    caps = probe_capabilities()
    if needs_gpu(caps.cuda, args.tiny):
        return 2
    pool = [tiny_case(c) for c in CASES] if args.tiny else list(CASES)
    cases = [c for c in pool if c.name in {x.name for x in cases}]
    print(f"{caps.gpu_name}; cache {cache}; budget {args.budget_s:.0f} s", flush=True)
    materialized: dict[str, Any] = {}
    queue = list(cases)
    while queue:
        case = queue.pop(0)
        is_reference = case.config == TrialConfig()
        if not args.rerun and load_recorded(case.name, [out, *recorded]) and not (is_reference and case.name in needed):
            print(f"{case.name}: recorded already, skipped", flush=True)
            continue
        need = case.expected_s + (0 if is_materialized(case.preset, cache) else MATERIALIZE_S.get(case.preset, 30))
        if not command.fits(case.name, need):
            break
        try:
            mat = materialize(case.preset, cache, "cuda" if caps.cuda else "cpu", materialized)
        except (OSError, ValueError, RuntimeError) as exc:  # no room, or the build failed: nothing runs
            print(f"stopping: {exc}", file=sys.stderr, flush=True)
            break
        reference, have_reference = reference_folder(case.preset, cache, [out, *recorded])
        if not is_reference and not have_reference:
            maker = next(c for c in pool if c.preset == case.preset and c.config == TrialConfig())
            if maker.name not in needed:  # once: without it, this case records no fidelity
                print(f"{case.name}: no reference output of {case.preset} here: {maker.name} runs first", flush=True)
                needed.add(maker.name)
                queue[:0] = [maker, case]
                continue
        preset = get_preset(case.preset)
        workload = case.workload or preset.workload
        request = TrialRequest(
            model=preset.model_info(),
            config=case.config,
            workload=workload,
            dtype="bfloat16",
            device="cuda" if caps.cuda else "cpu",
            memory_limit=None,  # the whole GPU: measure what each configuration needs
            timed_calls=args.timed_calls,
            max_timed_calls=args.timed_calls + 1,
            warmup_calls=1,
            cache_dir=str(cache),
            reference_dir=str(reference),
            save_reference=is_reference and not have_reference,
        )
        timeout = max(60.0, command.left() - MARGIN_S)
        print(f"{case.name}: {case.config.describe()} on {case.preset} (limit {timeout:.0f} s)", flush=True)
        m = run_trial(request, timeout=timeout, on_phase=printer(case.name))
        data = case_summary(m, case, workload)
        data.update(materialize=mat, gpu=caps.gpu_name, versions=dict(caps.versions), host=caps.host)
        (out / f"{case.name}.json").write_text(json.dumps(strict_json(data), indent=2, default=str))
        if request.save_reference and m.status == "ok":
            carry_reference(reference, out, case.preset)
        keys = ("status", "latency_s", "s_per_step", "peak_device_gib", "first_call_s", "psnr_db", "reason")
        print(f"{case.name}: " + ", ".join(f"{k}={data[k]}" for k in keys), flush=True)
    _write_summary(out, recorded)
    command.done()
    return 0


if __name__ == "__main__":
    sys.exit(main())
