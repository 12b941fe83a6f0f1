"""What a trial child records as it goes (``TrialRecord``), and the pipeline call's recorded arguments and output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qco_tune.calls.pipeline import GENERATOR_DEVICE, workload_arguments
from qco_tune.core.records import Measurement
from qco_tune.core.studyspec import Workload

if TYPE_CHECKING:
    pass


TOLERANCE = 0.05
"""Timed calls continue (up to ``max_timed_calls``) while spread / median exceeds this."""


CONTEXT_FALLBACK_BYTES = 512 * 2**20
"""CUDA context size assumed when NVML cannot measure it (for enforcing ``memory_limit``)."""


REASON_MAX_CHARS = 500


UNRECORDED_CALL_KWARGS = frozenset(
    {"generator", "output_type", "callback_on_step_end", "callback_on_step_end_tensor_inputs"}
)
"""Arguments every trial passes for its own measuring, left out of ``extra[CALL_KWARGS_KEY]``."""


@dataclass
class TrialRecord:
    """What a trial measured so far; turned into a ``Measurement`` whatever the outcome."""

    device: str
    load_s: float | None = None
    first_call_s: float | None = None
    warmup_s: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    step_time_s: float | None = None
    psnr_db: float | None = None
    latent_cosine: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def measurement(self, status: str, trackers: dict[str, Any], **kw: Any) -> Measurement:
        import statistics

        from qco_tune.measure.backends.measure import latency_spread

        host, dev = trackers.get("host"), trackers.get("device")
        extra = dict(self.extra)
        if self.warmup_s:
            extra["warmup_s"] = self.warmup_s
        return Measurement(
            status=status,  # type: ignore[arg-type]
            device=self.device,
            latency_s=statistics.median(self.latencies) if self.latencies else None,
            latency_spread_s=latency_spread(self.latencies),
            latencies_s=tuple(self.latencies),
            step_time_s=self.step_time_s,
            load_s=self.load_s,
            first_call_s=self.first_call_s,
            peak_host_bytes=host.peak_bytes if host else None,
            peak_device_bytes=dev.peak_device_bytes if dev else None,
            peak_allocated_bytes=dev.peak_allocated_bytes if dev else None,
            peak_reserved_bytes=dev.peak_reserved_bytes if dev else None,
            psnr_db=self.psnr_db,
            latent_cosine=self.latent_cosine,
            extra=extra,
            **kw,
        )


def call_kwargs(pipe: Any, workload: Workload, is_video: bool, callback: Any) -> dict[str, Any]:
    """Keyword arguments of one pipeline call; optional inputs only where the pipeline takes them.

    A CPU generator seeded with ``workload.seed`` makes the initial noise identical across devices
    and configurations (diffusers draws it on the CPU and moves it).
    """
    import inspect

    import torch

    accepted = inspect.signature(pipe.__call__).parameters
    kwargs: dict[str, Any] = {
        key: value
        for key, value, required in workload_arguments(workload, video=is_video)
        if required or (value is not None and key in accepted)
    }
    kwargs["generator"] = torch.Generator(GENERATOR_DEVICE).manual_seed(workload.seed)
    kwargs["output_type"] = "np"
    kwargs["callback_on_step_end"] = callback
    return kwargs


def recorded_call_kwargs(kwargs: dict[str, Any]) -> list[str]:
    """The sorted names of the workload's arguments in ``kwargs``, for ``extra[CALL_KWARGS_KEY]``."""
    return sorted(k for k in kwargs if k not in UNRECORDED_CALL_KWARGS)


def output_array(result: Any) -> Any:
    """The numpy images (or video frames) of a pipeline output with ``output_type="np"``."""
    import numpy as np

    for name in ("images", "frames"):
        value = getattr(result, name, None)
        if value is not None:
            return np.asarray(value)
    return np.asarray(result[0])
