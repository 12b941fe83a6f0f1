"""Trackers for one trial: wall time, host RAM, device memory, per-step time; and latency statistics.

Each tracker is a context manager whose results are attributes read after ``__exit__``. A figure
that could not be measured stays ``None``; nothing is estimated.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

SAMPLE_INTERVAL_S = 0.01


def _synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Stopwatch:
    """Wall time of a block, in seconds (``elapsed``); on CUDA the device is synchronised at both ends."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.elapsed: float | None = None
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        _synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            _synchronize(self.device)
        self.elapsed = time.perf_counter() - self._start


class _Sampler:
    """Calls ``sample()`` every ``interval`` seconds in a daemon thread between ``__enter__`` and ``__exit__``."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _start_sampling(self) -> None:
        self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()

    def _stop_sampling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


class HostMemoryTracker(_Sampler):
    """Peak resident memory (RSS) of this process during the block, in bytes (``peak_bytes``).

    RSS includes pinned (page-locked) host buffers, which offloading with streams allocates. On
    Linux the kernel's own high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``)
    catches spikes between samples; elsewhere the sampled maximum is the figure.
    """

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(interval)
        import psutil

        self._process = psutil.Process()
        self._sampled = 0
        self._hwm_reset = False
        self.peak_bytes: int | None = None

    def sample(self) -> None:
        self._sampled = max(self._sampled, self._process.memory_info().rss)

    def __enter__(self) -> HostMemoryTracker:
        self._hwm_reset = _reset_high_water_mark()
        self._start_sampling()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_sampling()
        hwm = _read_high_water_mark() if self._hwm_reset else None
        self.peak_bytes = max(self._sampled, hwm or 0)

    @property
    def current_peak_bytes(self) -> int:
        """The peak seen so far (sampled), readable while the block runs."""
        return self._sampled


def _reset_high_water_mark() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _read_high_water_mark() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


# -- NVML ----------------------------------------------------------------------------------------


def nvml_handle(visible_index: int = 0) -> Any | None:
    """The NVML handle of the ``visible_index``-th CUDA device this process sees; None without NVML.

    Resolves ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-``/``MIG-`` UUIDs) without initialising CUDA,
    so it can be called before torch touches the GPU. Assumes CUDA and NVML agree on the order of
    indices (true unless ``CUDA_DEVICE_ORDER`` and mixed GPU models make them differ).
    """
    try:
        import pynvml

        pynvml.nvmlInit()
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if "CUDA_VISIBLE_DEVICES" not in os.environ:
            return pynvml.nvmlDeviceGetHandleByIndex(visible_index)
        entry = visible[visible_index]
        if entry.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(entry))
        return pynvml.nvmlDeviceGetHandleByUUID(entry)
    except Exception:  # NVML missing, no driver, or an entry it cannot resolve: no device figure
        return None


def nvml_used_bytes(handle: Any) -> int | None:
    """Device memory in use on ``handle`` (all processes), in bytes; None when NVML fails."""
    if handle is None:
        return None
    try:
        import pynvml

        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:
        return None


class DeviceMemoryTracker(_Sampler):
    """Peak device memory of a CUDA trial, three ways, in bytes.

    - ``peak_device_bytes``: NVML used memory sampled every ``interval`` seconds, minus
      ``baseline_used`` — the used memory read *before* this process initialised CUDA — so it
      includes the CUDA context and memory outside torch's allocator. Other processes' changes on
      the same GPU would count too. None without NVML or without a baseline.
    - ``peak_allocated_bytes`` / ``peak_reserved_bytes``: torch's allocator peaks since ``__enter__``
      (``reset_peak_memory_stats``).
    """

    def __init__(
        self,
        baseline_used: int | None,
        handle: Any | None = None,
        device_index: int = 0,
        interval: float = SAMPLE_INTERVAL_S,
    ) -> None:
        super().__init__(interval)
        self.baseline_used = baseline_used
        self.handle = handle
        self.device_index = device_index
        self._max_used: int | None = None
        self.peak_device_bytes: int | None = None
        self.peak_allocated_bytes: int | None = None
        self.peak_reserved_bytes: int | None = None

    def sample(self) -> None:
        used = nvml_used_bytes(self.handle)
        if used is not None:
            self._max_used = used if self._max_used is None else max(self._max_used, used)

    def __enter__(self) -> DeviceMemoryTracker:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device_index)
        self._start_sampling()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        self._stop_sampling()
        self.peak_allocated_bytes = int(torch.cuda.max_memory_allocated(self.device_index))
        self.peak_reserved_bytes = int(torch.cuda.max_memory_reserved(self.device_index))
        if self._max_used is not None and self.baseline_used is not None:
            self.peak_device_bytes = max(0, self._max_used - self.baseline_used)


class StepTimer:
    """A ``callback_on_step_end`` that timestamps denoising steps; ``step_time_s`` is the median step.

    A step's duration is the time between consecutive callbacks of one call, so the first step of
    each call (which has no preceding callback) is not counted and a one-step call yields nothing.
    On CUDA each timestamp synchronises the device, so the figure is device time, not launch time.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.durations: list[float] = []
        self._last: float | None = None

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        _synchronize(self.device)
        now = time.perf_counter()
        if step > 0 and self._last is not None:
            self.durations.append(now - self._last)
        self._last = now
        return callback_kwargs

    def reset(self) -> None:
        """Forget recorded steps (e.g. those of warm-up calls)."""
        self.durations.clear()
        self._last = None

    @property
    def step_time_s(self) -> float | None:
        return statistics.median(self.durations) if self.durations else None


# -- statistics of timed calls ---------------------------------------------------------------------


def latency_spread(latencies: Sequence[float]) -> float | None:
    """Interquartile range of ``latencies``; ``max - min`` under four values; None when empty."""
    if not latencies:
        return None
    if len(latencies) < 4:
        return max(latencies) - min(latencies)
    q1, _, q3 = statistics.quantiles(latencies, n=4, method="inclusive")
    return q3 - q1


def relative_spread(latencies: Sequence[float]) -> float:
    """``latency_spread / median``; infinite for no values or a zero median."""
    spread = latency_spread(latencies)
    median = statistics.median(latencies) if latencies else 0.0
    if spread is None or median <= 0:
        return float("inf")
    return spread / median


def needs_more_calls(latencies: Sequence[float], minimum: int, maximum: int, tolerance: float = 0.05) -> bool:
    """Whether to time another call: below ``minimum``, or spread above ``tolerance`` and below ``maximum``."""
    if len(latencies) < minimum:
        return True
    return len(latencies) < maximum and relative_spread(latencies) > tolerance
