"""A predicted peak held against the budget: the margins, and the checks that skip a trial or refuse a study.

Stdlib only. The margins are the memory model's measured error (``search.memory``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qco_tune.core.units import GIB, format_size

if TYPE_CHECKING:
    from qco_tune.search.memory import Correction, MemoryPrediction


UNCALIBRATED_MARGIN = 0.10
"""How far over the budget an uncalibrated prediction may be and still run: the model's worst error on
the recorded full-size trials that fit (FLUX.1-dev and Wan2.1-1.3B through the real runner,
``studies/results/full_size`` on an H100, ``measurements/h200-2026-12-01`` on an H200: 11 trials, copied
to ``tests/core/data/full_size_trials.json``). Its worst over-prediction there is +7.8% of the device
peak (+8.7% of the reserved one) for the NF4 transformer + T5 with group offload on the H200 (trial 4),
its worst under-prediction -4.9% (Wan2.1 NF4); rounded up to 10%. Over-prediction
is what wrongly skips, so the margin covers the worst of it; the three configurations of that H200 study
that ran out of memory or were predicted far over are predicted 1.2x to 1.45x over a 16 GiB budget."""


MARGIN_FLOOR = 0.05
"""The least margin of a calibrated model: its residuals are measured on the trials it was fitted on, so
they understate its error on a new configuration (half the uncalibrated margin)."""


MARGIN_CAP = 0.5
"""The most margin: a model this wrong on a study still skips what it predicts 1.5x over (the old rule)."""


NOTHING_FITS_MARGIN = 0.25
"""``prepare`` refuses a whole study only when its smallest predicted need is this far over the budget:
a wrong refusal costs the user everything, so this is two and a half times the per-trial margin."""


DEFAULT_MARGIN = 1 + NOTHING_FITS_MARGIN
"""The factor ``over_budget`` and ``over_budget_bytes`` apply by default (the cautious check)."""


def skip_margin(correction: Correction | None) -> float:
    """How far over the budget (a fraction) a prediction made with ``correction`` may be and still run.

    Uncalibrated: ``UNCALIBRATED_MARGIN``. Calibrated: the correction's own error on the study's
    finished trials (``Correction.error``), at least ``MARGIN_FLOOR`` and at most ``MARGIN_CAP``.
    """
    if correction is None or not correction.trials or correction.error is None:
        return UNCALIBRATED_MARGIN
    return min(max(correction.error, MARGIN_FLOOR), MARGIN_CAP)


@dataclass(frozen=True)
class BudgetCheck:
    """A prediction held against the budget with the margin of the model that made it."""

    predicted: int
    budget: int
    margin: float
    """Fraction of the budget a prediction may exceed it by and still run (``skip_margin``)."""
    trials: int
    """Finished trials the prediction was calibrated on (0: uncalibrated)."""

    @property
    def over(self) -> bool:
        """True when the prediction is over the budget by more than the margin."""
        return self.predicted > self.budget * (1 + self.margin)

    @property
    def excess_gib(self) -> float:
        return (self.predicted - self.budget) / GIB

    def reason(self) -> str:
        """One line for the skipped trial: the prediction, how it was made, the margin and the budget."""
        how = f"calibrated on {self.trials} trial(s)" if self.trials else "uncalibrated"
        return (
            f"predicted {format_size(self.predicted)} ({how}, margin {self.margin:.0%}) is over the "
            f"{format_size(self.budget)} budget"
        )


def budget_check(prediction: MemoryPrediction, budget: int, margin: float | None = None) -> BudgetCheck | None:
    """``prediction`` against ``budget``; None when the prediction is unknown.

    ``margin`` overrides the model's own (``skip_margin`` of the prediction's correction).
    """
    if prediction.device_bytes is None:
        return None
    correction = prediction.correction
    return BudgetCheck(
        predicted=int(prediction.device_bytes),
        budget=budget,
        margin=skip_margin(correction) if margin is None else margin,
        trials=correction.trials if correction is not None else 0,
    )


def over_budget(prediction: MemoryPrediction, budget: int, margin: float = DEFAULT_MARGIN) -> bool:
    """True only when the prediction is clearly over ``budget``: more than ``margin`` times it."""
    return prediction.device_bytes is not None and over_budget_bytes(prediction.device_bytes, budget, margin)


def over_budget_bytes(need: int, budget: int, margin: float = DEFAULT_MARGIN) -> bool:
    """True when ``need`` bytes are more than ``margin`` times ``budget`` (the cautious check of ``prepare``)."""
    return need > budget * margin


def counted_memory(memory_metric: str, cuda: bool | None) -> str:
    """What a study's budget and peaks count, in words: ``host RAM`` where trials run on the CPU (no CUDA:
    ``Measurement.memory_for``), else the device memory that ``budget.counts`` names. ``cuda`` None: unknown
    (a study stored without its capabilities), read as the GPU the spec names."""
    if cuda is False:
        return "host RAM"
    return {"device": "VRAM (device)", "reserved": "VRAM (reserved)", "allocated": "VRAM (allocated)"}.get(
        memory_metric, f"VRAM ({memory_metric})"
    )


def study_counted_memory(spec: object, capabilities: object) -> str:
    """``counted_memory`` of a stored study, from its ``qco.spec`` and ``qco.capabilities`` attributes."""
    metric = spec.get("memory_metric", "device") if isinstance(spec, dict) else "device"
    cuda = capabilities.get("cuda") if isinstance(capabilities, dict) else None
    return counted_memory(str(metric), cuda if isinstance(cuda, bool) else None)
