"""The value objects of the memory model: a prediction's terms, the corrections fitted on a study's trials,
and a prediction (``qco_tune.search.memory``).

Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass

from qco_tune.core.units import GIB


@dataclass(frozen=True)
class MemoryTerms:
    """The parts of one predicted peak, in bytes, as the counted metric sees them."""

    weights: float = 0.0
    """Unquantized weights resident at the peak."""
    quantized: float = 0.0
    """Quantized weights resident at the peak."""
    activations: float = 0.0
    """Activations at the peak (with the allocator's reserve when the metric counts it)."""
    overhead: float = 0.0
    """CUDA context and workspaces (device), or the process itself (host)."""

    @property
    def total(self) -> float:
        return self.weights + self.quantized + self.activations + self.overhead

    def as_dict(self) -> dict[str, float]:
        return {
            "weights": self.weights,
            "quantized": self.quantized,
            "activations": self.activations,
            "overhead": self.overhead,
        }


@dataclass(frozen=True)
class Correction:
    """A fitted correction of one kind of prediction: ``sum(scale x term) + overhead + offset``."""

    weights: float = 1.0
    quantized: float = 1.0
    activations: float = 1.0
    offset: float = 0.0
    """Bytes added to every prediction (e.g. a larger CUDA context than assumed)."""
    trials: int = 0
    """Finished trials it was fitted on (0: the uncorrected model)."""
    error: float | None = None
    """A high quantile of ``|corrected / measured - 1|`` over those trials (``calibration.fit``); None
    without trials. ``skip_margin`` reads it."""

    def apply(self, terms: MemoryTerms) -> float:
        value = (
            self.weights * terms.weights
            + self.quantized * terms.quantized
            + self.activations * terms.activations
            + terms.overhead
            + self.offset
        )
        return max(value, 0.0)

    def describe(self) -> str:
        if not self.trials:
            return "uncalibrated"
        return (
            f"calibrated on {self.trials} trial(s): weights x{self.weights:.2f}, quantized x{self.quantized:.2f}, "
            f"activations x{self.activations:.2f}, {self.offset / GIB:+.2f} GiB"
        )


@dataclass(frozen=True)
class Calibration:
    """Corrections of the device (counted metric) and host predictions, fitted on a study's trials."""

    device: Correction = Correction()
    host: Correction = Correction()


UNCALIBRATED = Calibration()


@dataclass(frozen=True)
class MemoryPrediction:
    """Predicted peaks of one configuration; ``None`` where parameter counts are unknown."""

    device_bytes: int | None
    """The peak the budget counts: device memory as ``spec.memory_metric`` counts it, or host RAM
    on a machine without CUDA (where the trial runs on the CPU). Calibrated when a calibration was given."""
    host_bytes: int | None
    """Peak host RAM of the trial process (offloaded and pinned weights count)."""
    detail: str
    """One line on how the number was made, for trial attributes and the TUI."""
    raw_device_bytes: int | None = None
    """``device_bytes`` before calibration."""
    device_terms: MemoryTerms | None = None
    host_terms: MemoryTerms | None = None
    correction: Correction | None = None
    """The correction applied to ``device_bytes`` (its ``error`` sets the skip margin)."""
