"""The knob table: the GPU suite's knob cases as one Markdown table, and which cases have not run yet.

    python3 -m qco_tune.tools.knob_table CASES.jsonl OUT [--cases tests/gpu/test_gpu_knobs.py] [--title TEXT]

``CASES.jsonl`` is what ``QCO_GPU_CASES=DIR`` makes the knob suite (``tests/gpu/test_gpu_knobs.py``) append,
one measurement a line. Writes ``OUT/README.md`` (case, knob, status, s/step, device peak, PSNR, cold start)
and a copy of the lines as ``OUT/cases.jsonl``. A line names its case (``case``); lines written before
they did are named by matching their configuration against the suite's cases (``--cases``: the test module,
imported for its ``CASES`` and ``EXCLUDED``; the first unoptimised line is the reference). The suite's
cases with no line are listed as not run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

GIB = 2**30
SUITE = Path("tests", "gpu", "test_gpu_knobs.py")
REFERENCE = "reference"


def suite_cases(path: Path) -> list[tuple[str, str]]:
    """(case id, configuration described) of every case the test module at ``path`` runs, excluded ones too."""
    spec = importlib.util.spec_from_file_location("qco_knob_suite", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cases = [(name, config.describe()) for name, config, _ in module.CASES]
    return cases + [(name, config.describe()) for name, config, _ in getattr(module, "EXCLUDED", [])]


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The measurements of ``path``, one JSON object a line (``ValueError`` naming the line)."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}, line {number}: not JSON ({exc})") from None
        if not isinstance(data, dict) or "configuration" not in data:
            raise ValueError(f"{path}, line {number}: not a knob case (no configuration)")
        rows.append(data)
    return rows


def name_rows(rows: list[dict[str, Any]], cases: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    """Each row with its case id: its own, else the first unclaimed suite case of the same configuration."""
    free = list(cases)
    named = []
    for i, row in enumerate(rows):
        name = row.get("case")
        if not name:
            if i == 0 and row["configuration"] == "bf16":
                name = REFERENCE
            else:
                name = next((n for n, d in free if d == row["configuration"]), "?")
        free = [(n, d) for n, d in free if n != name]
        named.append((str(name), row))
    return named


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None or value == 0 else format(value / scale, spec)


def render(named: list[tuple[str, dict[str, Any]]], missing: list[str], title: str, source: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"From `{source}`: one line per case as it finished. s/step: time per denoising step of a timed call; "
        "device peak: NVML (the whole process, `-` where NVML reported nothing), allocated: the allocator's "
        "peak; PSNR of the decoded output against the unoptimised reference (`inf`: identical); cold start: the "
        "first call (compilation included).",
        "",
        "| case | knob | status | s/step | device peak GiB | allocated GiB | PSNR dB | cold start s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in named:
        psnr = "inf" if row.get("psnr_db") is None and row.get("identical") else _fmt(row.get("psnr_db"), ".1f")
        status = row.get("status", "?") + (f" ({row['reason']})" if row.get("reason") else "")
        lines.append(
            f"| {name} | {row['configuration']} | {status} | {_fmt(row.get('step_time_s'), '.4f')} "
            f"| {_fmt(row.get('peak_device_bytes'), '.2f', GIB)} | {_fmt(row.get('peak_allocated_bytes'), '.2f', GIB)} "
            f"| {psnr} | {_fmt(row.get('first_call_s'), '.1f')} |"
        )
    if missing:
        lines += ["", f"Not run yet on the GPU ({len(missing)} cases): " + ", ".join(f"`{m}`" for m in missing) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases_jsonl", type=Path, help="the suite's cases.jsonl")
    parser.add_argument("out", type=Path, help="folder for README.md and cases.jsonl")
    parser.add_argument("--cases", type=Path, default=SUITE, help=f"the knob suite's test module ({SUITE})")
    parser.add_argument("--title", default="Every knob on the GPU", help="the table's heading")
    parser.add_argument("--notes", type=Path, help="Markdown added under the table (where it ran, what cut it off)")
    args = parser.parse_args(argv)
    try:
        rows = read_lines(args.cases_jsonl)
        cases = suite_cases(args.cases) if args.cases.is_file() else []
        notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
    except (OSError, ValueError) as exc:
        print(f"knob_table: {exc}", file=sys.stderr)
        return 2
    if not args.cases.is_file():
        print(f"knob_table: {args.cases} not found: cases are named by their own lines only", file=sys.stderr)
    named = name_rows(rows, cases)
    done = {n for n, _ in named}
    missing = [n for n, _ in cases if n not in done]
    args.out.mkdir(parents=True, exist_ok=True)
    text = render(named, missing, args.title, args.cases_jsonl.name)
    (args.out / "README.md").write_text(text + (f"\n{notes}" if notes else ""), encoding="utf-8")
    if args.cases_jsonl.resolve() != (args.out / "cases.jsonl").resolve():
        shutil.copyfile(args.cases_jsonl, args.out / "cases.jsonl")
    print(f"{len(named)} cases, {len(missing)} not run: {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
