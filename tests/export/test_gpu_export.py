"""On a CUDA GPU: exported snippets run, and the best trial's snippet reproduces what the trial measured.

A tiny study runs on the GPU through the real study loop (child processes), its best trial is
exported with ``--model`` pointing at the materialised tiny pipeline, and the snippet runs in a fresh
process that times its pipeline call the way a trial does (``measure_snippet.py``: numpy output, no
progress bar), then runs it as written to the end: the median latency and torch's allocator peak
must be within 10% of the trial's. Skipped without CUDA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from export_cases import CASES

from qco_tune.core.presets import get_preset
from qco_tune.core.studyspec import SpaceRestriction, StudySpec, Workload
from qco_tune.export.render import render_python

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

HERE = Path(__file__).parent
REPO = HERE.parents[1]
TOLERANCE = 0.10
WORKLOAD = Workload(height=4096, width=4096, steps=30, guidance=3.5, max_sequence_length=64)
"""Large enough that attention over 65,536 tokens, on the GPU, sets the pace: smaller calls of the tiny
model are paced by Python and numpy on the CPU, whose timings varied by 30% between calls (H100 host)."""
TIMED_CALLS = 12
"""Calls timed in the trials and in the snippet: medians of a dozen calls, not of three, are compared."""
CUDA_CASES = (
    "guide_flux_quantization",
    "guide_flux_quantization_compile",
    "guide_flux_quantization_compile_model_offload",
    "guide_wan_group_offload",
    "torchao_int8_sequential_offload",
    "bnb_int8_group_block_no_stream",
)


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "QCO_CACHE": str(cache),
    }


def test_best_trial_snippet_reproduces_its_measurement(
    tmp_path: Path, qco_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    from qco_tune.loop.export_study import prepare_export
    from qco_tune.loop.study import run_study
    from qco_tune.measure.backends.tiny import materialize_preset

    monkeypatch.setenv("QCO_CACHE", str(qco_cache_dir))
    folder = materialize_preset("tiny-flux", qco_cache_dir)
    spec = StudySpec(
        name="export-gpu",
        model="tiny-flux",
        workload=WORKLOAD,
        vram_budget=64 * 2**30,  # the memory model's prediction for 4096x4096 is generous (about 40 GiB)
        memory_metric="allocated",
        trials=2,
        timed_calls=TIMED_CALLS,
        max_timed_calls=TIMED_CALLS,
        warmup_calls=2,
        trial_timeout=600,
        space=SpaceRestriction(
            quantization=("none", "bnb_nf4", "torchao_int8wo"), compile=("none",), offload=("none",)
        ),
    )
    url = f"sqlite:///{tmp_path}/gpu.db"
    result = run_study(spec, storage_url=url)
    assert result.summary is not None and result.summary.best is not None, result.summary
    best = result.summary.best
    study = optuna.load_study(study_name=spec.name, storage=url)
    prepared = prepare_export(spec.name, study.user_attrs, study.get_trials(deepcopy=False), model=str(folder))
    snippet = tmp_path / "tuned.py"
    snippet.write_text(prepared.render("python"))
    out = tmp_path / "measured.json"
    subprocess.run(
        [
            sys.executable,
            str(HERE / "measure_snippet.py"),
            str(snippet),
            str(out),
            str(spec.warmup_calls),
            str(spec.timed_calls),
        ],
        cwd=tmp_path,
        env=_env(qco_cache_dir),
        check=True,
        timeout=600,
    )
    measured = json.loads(out.read_text())
    trial_memory = best.measurement.peak_allocated_bytes if best.measurement else None
    print(
        f"trial {best.number} {best.config.describe() if best.config else '?'}: {best.latency_s:.4f} s "
        f"{best.measurement.latencies_s if best.measurement else ''}, {trial_memory} B allocated; "
        f"snippet: {measured['latency_s']:.4f} s {measured['latencies_s']}, {measured['peak_allocated_bytes']} B "
        f"allocated; PIL images instead of numpy arrays add {measured['pil_extra_s']:.4f} s"
    )
    assert best.latency_s is not None and trial_memory is not None
    assert abs(measured["latency_s"] - best.latency_s) <= TOLERANCE * best.latency_s
    assert abs(measured["peak_allocated_bytes"] - trial_memory) <= TOLERANCE * trial_memory


def test_snippets_that_need_cuda_run(tmp_path: Path, qco_cache_dir: Path) -> None:
    """The guide's recipes and the other CUDA-only knobs (bitsandbytes, offloading, compile), on the tiny pipeline."""
    from qco_tune.measure.backends.tiny import materialize_preset

    folder = materialize_preset("tiny-flux", qco_cache_dir)
    tiny = get_preset("tiny-flux").model_info()
    small = Workload(height=256, width=256, steps=4, guidance=3.5, max_sequence_length=64)
    failures = {}
    for case in (c for c in CASES if c.name in CUDA_CASES):
        work = tmp_path / case.name
        work.mkdir()
        quantized = tuple((c, b) for c, b in case.config.quantization if c in {x.name for x in tiny.components})
        config = case.config.__class__(**{**case.config.__dict__, "quantization": quantized})
        (work / "tuned.py").write_text(
            render_python(config, model=tiny, workload=small, dtype=case.dtype, model_ref=str(folder))
        )
        run = subprocess.run(
            [sys.executable, "tuned.py"], cwd=work, env=_env(qco_cache_dir), capture_output=True, text=True, timeout=600
        )
        if run.returncode != 0 or not (work / "output.png").exists():
            failures[case.name] = run.stderr[-2000:]
    assert not failures, failures
