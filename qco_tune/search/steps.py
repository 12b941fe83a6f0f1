"""Per-step extrapolation: a trial measured with fewer denoising steps than the study's workload.

Stdlib only. A pipeline call is a fixed part (text encoding, VAE decode, Python overhead) plus one
denoiser step per step; the trial measures its calls and the median time of one step
(``callback_on_step_end``), so at the study's step count::

    latency(steps) = fixed + steps x step_time,  fixed = latency(measured_steps) - measured_steps x step_time

that is ``latency(measured) + (steps - measured) x step_time``. The trial keeps what it measured in
``extra["extrapolated"]`` and is marked extrapolated; the study measures its final Pareto front again
at the full step count (``qco_tune.loop.study.remeasure_front``), and those measurements are authoritative.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qco_tune.core.keys import EXTRAPOLATED_KEY
from qco_tune.core.records import Measurement

__all__ = ["EXTRAPOLATED_KEY", "extrapolate", "extrapolate_latency", "extrapolation_of", "is_extrapolated"]


def extrapolate_latency(latency_s: float, step_time_s: float, measured_steps: int, steps: int) -> float:
    """The latency of a call of ``steps`` steps from one of ``measured_steps`` steps and the time of one step."""
    if measured_steps < 1 or steps < 1:
        raise ValueError(f"step counts must be positive, got {measured_steps} and {steps}")
    if step_time_s < 0 or latency_s < 0:
        raise ValueError("times must not be negative")
    return latency_s + (steps - measured_steps) * step_time_s


def extrapolate(measurement: Measurement, measured_steps: int, steps: int) -> Measurement:
    """``measurement`` (made with ``measured_steps``) as it would be at ``steps``: latencies and cold start.

    A finished trial without a per-step time cannot be extrapolated: it becomes an ``error`` with
    that reason (its figures would be those of a shorter call). Failed trials pass through, marked.
    """
    if measured_steps == steps:
        return measurement
    step = measurement.step_time_s
    note: dict[str, Any] = {"measured_steps": measured_steps, "steps": steps, "step_time_s": step}
    if measurement.status != "ok":
        return _with(measurement, extra={**measurement.extra, EXTRAPOLATED_KEY: note})
    if step is None or measurement.latency_s is None:
        reason = (
            f"measured with {measured_steps} steps but no per-step time was recorded: "
            f"cannot extrapolate to {steps} steps"
        )
        return _with(measurement, status="error", reason=reason, extra={**measurement.extra, EXTRAPOLATED_KEY: note})

    def ahead(value: float | None) -> float | None:
        return None if value is None else extrapolate_latency(value, step, measured_steps, steps)

    note.update(
        fixed_s=measurement.latency_s - measured_steps * step,
        measured_latency_s=measurement.latency_s,
        measured_latencies_s=list(measurement.latencies_s),
        measured_first_call_s=measurement.first_call_s,
    )
    return _with(
        measurement,
        latency_s=ahead(measurement.latency_s),
        latencies_s=tuple(v for v in map(ahead, measurement.latencies_s) if v is not None),
        first_call_s=ahead(measurement.first_call_s),
        extra={**measurement.extra, EXTRAPOLATED_KEY: note},
    )


def _with(measurement: Measurement, **changes: Any) -> Measurement:
    return dataclasses.replace(measurement, **changes)


def extrapolation_of(measurement: Measurement | None) -> dict[str, Any] | None:
    """What an extrapolated trial measured (``extra["extrapolated"]``), or None for a full-step trial."""
    if measurement is None:
        return None
    note = measurement.extra.get(EXTRAPOLATED_KEY)
    return note if isinstance(note, dict) else None


def is_extrapolated(measurement: Measurement | None) -> bool:
    """The trial measured fewer steps than the study's workload and its latency is extrapolated."""
    return extrapolation_of(measurement) is not None
