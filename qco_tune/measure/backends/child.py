"""One trial, in its own process: ``python -m qco_tune.measure.backends.child REQUEST.json RESULT.json``.

Reads a ``TrialRequest``, loads and configures the pipeline, times it, and writes a
``Measurement`` as JSON to RESULT.json; the last output image (or video) goes to
``RESULT.output.npy`` (path in ``extra["output_path"]``). The first call's output and final latents
are compared with the study's reference (``request.reference_dir``), or become it
(``request.save_reference``): ``psnr_db`` and ``latent_cosine``. Progress goes to stdout as flushed
lines ``QCO-PHASE import``, ``QCO-PHASE materialize ...`` (a preset's first use only), ``QCO-PHASE load``,
``QCO-PHASE apply``, ``QCO-PHASE first-call``, ``QCO-PHASE warmup``, ``QCO-PHASE timed i/N`` (N is
``timed_calls``, then ``max_timed_calls`` once the spread asks for more calls) and ``QCO-PHASE done``.

A compiling trial with ``request.compile_artifacts_dir`` loads the study's portable compile artefacts
of its GPU kind, torch and Triton before compiling and saves its own after the first call
(``measure.backends.artifacts``; recorded in ``extra["compile_cache"]["artifacts"]``).

Exit status 0 whenever a result was written, failures included (OOM: status ``oom``; any other
exception: status ``error`` with the traceback in ``output_tail``). A crash (abort, segfault) or a
hang leaves no result: the parent turns those into data. Status 2: bad command line.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qco_tune.core.keys import CALL_KWARGS_KEY, COMPILE_CACHE_KEY
from qco_tune.core.records import Measurement, TrialRequest
from qco_tune.measure.backends import compile_cache
from qco_tune.measure.backends.fidelity import FinalLatents
from qco_tune.measure.backends.libraries import import_libraries, quiet_libraries
from qco_tune.measure.backends.outputs import (
    load_compile_artifacts,
    measure_fidelity,
    save_compile_artifacts,
    save_output,
)
from qco_tune.measure.backends.record import (
    CONTEXT_FALLBACK_BYTES,
    REASON_MAX_CHARS,
    TOLERANCE,
    TrialRecord,
    call_kwargs,
    output_array,
    recorded_call_kwargs,
)
from qco_tune.measure.launcher import report_phase

if TYPE_CHECKING:
    pass


def phase(name: str) -> None:
    """Tell the parent which phase the trial is in."""
    report_phase(name)


def inject_fault(fault: str | None) -> None:
    """Test-only failure modes, triggered after loading."""
    if fault is None:
        return
    import torch

    if fault == "abort":
        os.abort()
    elif fault == "segfault":
        import ctypes

        ctypes.string_at(0)
    elif fault == "hang":
        while True:
            time.sleep(3600)
    elif fault == "oom":
        raise torch.OutOfMemoryError("test fault")
    elif fault == "error":
        raise RuntimeError("injected test fault")
    else:
        raise ValueError(f"unknown fault {fault!r}")


def preload(request: TrialRequest) -> None:
    """Import the pipeline's classes and quantization libraries, so that ``load_s`` times loading, not imports.

    Also validates the quantization before anything is timed (``ValueError`` names the conflict).
    """
    import diffusers
    import transformers

    from qco_tune.measure.backends.quantization import build_quantization_config

    pipeline_class = request.model.pipeline_class
    if pipeline_class != "DiffusionPipeline" and not _has_class(diffusers, pipeline_class):
        raise ValueError(
            f"{request.model.reference}: its model_index.json names {pipeline_class}, which diffusers "
            f"{diffusers.__version__} does not have (a newer diffusers, or a custom pipeline, is needed)"
        )
    for name in (request.model.pipeline_class, *(c.class_name for c in request.model.components)):
        for library in (diffusers, transformers):
            try:
                getattr(library, name)
                break
            except (AttributeError, ImportError):  # not this library's class (or not importable: load says why)
                continue
    build_quantization_config(request.config, request.model, request.dtype)


def _has_class(library: Any, name: str) -> bool:
    try:
        getattr(library, name)
    except (AttributeError, ImportError):
        return False
    return True


def materialize(request: TrialRequest, record: TrialRecord) -> None:
    """Build a preset's folder if this machine has none yet (normally done before the study starts)."""
    if request.model.source != "preset":
        return
    from qco_tune.core import paths
    from qco_tune.core.presets.cache import is_materialized
    from qco_tune.measure.backends.materialize import PhaseProgress, materialize_preset

    cache = request.cache_dir or paths.cache_dir()
    if is_materialized(request.model.reference, cache):
        return
    result = materialize_preset(request.model.reference, cache, progress=PhaseProgress())
    record.extra["materialize_s"] = result.seconds


def limit_device_memory(request: TrialRequest, baseline_used: int | None, handle: Any, record: TrialRecord) -> None:
    """Initialise CUDA and cap torch's allocator at ``memory_limit`` minus the CUDA context.

    Only when the GPU has more memory than the limit. The context is measured (NVML used now minus
    the baseline read before CUDA started) or, without NVML, assumed to be 512 MiB. Memory outside
    torch's allocator is not capped; the NVML peak shows it.
    """
    import torch

    from qco_tune.measure.backends.measure import nvml_used_bytes

    torch.empty(1, device="cuda")  # creates the context, so it can be measured
    used = nvml_used_bytes(handle)
    context = used - baseline_used if used is not None and baseline_used is not None else None
    record.extra["cuda_context_bytes"] = context
    total = torch.cuda.get_device_properties(0).total_memory
    limit = request.memory_limit
    if limit is None or total <= limit:
        return
    usable = limit - (context if context is not None else CONTEXT_FALLBACK_BYTES)
    if usable <= 0:
        raise torch.OutOfMemoryError(f"memory limit {limit} B leaves nothing after the CUDA context")
    fraction = usable / total
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    record.extra["memory_limit_fraction"] = fraction


def run_trial(request: TrialRequest, record: TrialRecord, trackers: dict[str, Any], output_path: Path) -> None:
    """Load, configure and time the pipeline, filling ``record``; exceptions propagate."""
    from qco_tune.calls.dynamo import dynamo_settings
    from qco_tune.measure.backends.apply import apply_config
    from qco_tune.measure.backends.measure import StepTimer, Stopwatch, needs_more_calls
    from qco_tune.measure.backends.models import load_pipeline

    device = request.device
    preload(request)
    materialize(request, record)
    phase("load")
    with Stopwatch(device) as watch:
        pipe = load_pipeline(request.model, request.config, request.dtype, device, request.cache_dir)
    record.load_s = watch.elapsed
    inject_fault(request.fault)

    phase("apply")
    artifacts = load_compile_artifacts(request, record)
    apply_config(pipe, request.config, device)
    record.extra["dynamo"] = dynamo_settings(request.config)
    record.extra["steps"] = request.workload.steps
    pipe.set_progress_bar_config(disable=True)
    timer = StepTimer(device)
    capture = FinalLatents(timer)

    def call(callback: Any = timer) -> tuple[float, Any]:
        kwargs = call_kwargs(pipe, request.workload, request.model.is_video, callback)
        record.extra[CALL_KWARGS_KEY] = recorded_call_kwargs(kwargs)
        with Stopwatch(device) as w:
            result = pipe(**kwargs)
        assert w.elapsed is not None
        return w.elapsed, result

    phase("first-call")
    capture.enabled = True
    record.first_call_s, result = call(capture)
    capture.enabled = False
    if artifacts is not None:
        save_compile_artifacts(request, record, *artifacts)
    measure_fidelity(request, record, output_array(result), capture.latents())
    if request.warmup_calls > 0:
        phase("warmup")
        for _ in range(request.warmup_calls):
            record.warmup_s.append(call()[0])
    timer.reset()
    while needs_more_calls(record.latencies, request.timed_calls, request.max_timed_calls, TOLERANCE):
        n = len(record.latencies) + 1
        phase(f"timed {n}/{request.timed_calls if n <= request.timed_calls else request.max_timed_calls}")
        elapsed, result = call()
        record.latencies.append(elapsed)
    record.step_time_s = timer.step_time_s
    save_output(output_array(result), output_path, record)


def measure(request: TrialRequest, result_path: Path, baseline_used: int | None, handle: Any) -> Measurement:
    """Run the trial under the trackers and turn its outcome, whatever it is, into a ``Measurement``."""
    import torch

    from qco_tune.measure.backends.measure import DeviceMemoryTracker, HostMemoryTracker

    record = TrialRecord(device=request.device)
    trackers: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            trackers["host"] = stack.enter_context(HostMemoryTracker())
            if request.device == "cuda":
                limit_device_memory(request, baseline_used, handle, record)
                trackers["device"] = stack.enter_context(DeviceMemoryTracker(baseline_used, handle))
            run_trial(request, record, trackers, result_path.with_suffix(".output.npy"))
    except torch.OutOfMemoryError as exc:
        return record.measurement("oom", trackers, reason=_first_line(exc))
    except Exception as exc:
        if "out of memory" in str(exc).lower():  # OOMs raised outside torch's allocator (e.g. CUDA kernels)
            return record.measurement("oom", trackers, reason=_first_line(exc), output_tail=traceback.format_exc())
        reason = traceback.format_exception_only(type(exc), exc)[-1].strip()[:REASON_MAX_CHARS]
        return record.measurement("error", trackers, reason=reason, output_tail=traceback.format_exc())
    return record.measurement("ok", trackers)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:REASON_MAX_CHARS]


def write_result(path: Path, measurement: Measurement) -> None:
    """Write atomically, so the parent never reads half a result."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(measurement.to_dict(), indent=2, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m qco_tune.measure.backends.child REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request_path, result_path = Path(args[0]), Path(args[1])
    try:
        request = TrialRequest.from_dict(json.loads(request_path.read_text()))
    except Exception as exc:
        reason = f"unreadable trial request: {traceback.format_exception_only(type(exc), exc)[-1].strip()}"
        write_result(result_path, Measurement(status="error", reason=reason, output_tail=traceback.format_exc()))
        return 0

    baseline_used, handle = None, None
    if request.device == "cuda":
        from qco_tune.measure.backends.measure import nvml_handle, nvml_used_bytes

        # Read before torch initialises CUDA: the difference later is this process's footprint.
        handle = nvml_handle(0)
        baseline_used = nvml_used_bytes(handle)
    cache = compile_cache.configure(request)  # before torch is imported: it reads the variables then
    phase("import")
    quiet_libraries()
    import_libraries()
    measurement = measure(request, result_path, baseline_used, handle)
    if cache is not None and request.config.compile != "none":
        report = {**cache.report(), **measurement.extra.get(COMPILE_CACHE_KEY, {})}
        if (report.get("artifacts") or {}).get("loaded_bytes"):
            report["state"] = "warm"  # started from the study's artefacts (made on another host, maybe)
        measurement.extra[COMPILE_CACHE_KEY] = report
    write_result(result_path, measurement)
    if cache is not None:
        cache.cleanup()
    phase("done")
    return 0


def _exit_fast(code: int) -> None:
    """Exit without tearing down torch's modules, which takes seconds and serves a throwaway process.

    Python-level exit handlers (e.g. compile worker pools) still run; files were closed already.
    """
    import atexit

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    _exit_fast(main())
