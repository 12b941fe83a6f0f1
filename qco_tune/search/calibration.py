"""The memory model corrects itself on a study's finished trials, and says how wrong it is.

Stdlib only. ``fit`` finds, for the device peak (the budget's counted metric) and for host RAM, a
scale per term of ``memory.MemoryTerms`` (unquantized weights, quantized weights, activations) and a
constant offset (e.g. a CUDA context larger than assumed) that minimise the *relative* error over the
trials measured so far. It is robust and cautious by construction:

- ridge regression towards the uncorrected model (scales 1, offset 0), so a term that no trial
  exercises keeps its scale, and one or two trials move the model only part of the way;
- Huber weights (iteratively reweighted), so one odd trial does not drag the rest;
- scales clamped to [``MIN_SCALE``, ``MAX_SCALE``].

``error_summary`` is what a study reports about its memory model: median and worst absolute relative
error of prediction against measurement, and the share within ±15%.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Capabilities, Measurement, ModelInfo
from qco_tune.core.studyspec import StudySpec
from qco_tune.search.memory import GIB, Calibration, Correction, MemoryTerms, predict_terms
from qco_tune.search.pareto import TrialRow

__all__ = ["ErrorSummary", "Sample", "calibrate", "error_summary", "fit", "high_quantile", "row_errors", "samples"]

RIDGE_SCALE = 0.05
"""Pull of each scale towards 1 (relative-error units)."""
RIDGE_OFFSET = 0.05
"""Pull of the offset towards 0, per GiB."""
HUBER = 0.10
"""Relative errors beyond this count linearly, not quadratically."""
ITERATIONS = 12
MIN_SCALE, MAX_SCALE = 0.25, 4.0
ERROR_QUANTILE = 0.9
"""``Correction.error`` is this quantile of the fitted trials' absolute relative errors (their maximum
below ten trials), so one odd trial in a long study does not widen the skip margin for good."""
WITHIN = 0.15
"""The tolerance ``error_summary`` counts trials within (±15%)."""


@dataclass(frozen=True)
class Sample:
    """One finished trial: the model's terms for its configuration and what it measured, in bytes."""

    terms: MemoryTerms
    measured: float


def fit(points: Sequence[Sample]) -> Correction:
    """The correction that best explains ``points`` (the identity with no points)."""
    points = [p for p in points if p.measured > 0]
    if not points:
        return Correction()
    prior = [1.0, 1.0, 1.0, 0.0]
    ridge = [RIDGE_SCALE, RIDGE_SCALE, RIDGE_SCALE, RIDGE_OFFSET]
    weights = [1.0] * len(points)
    theta = list(prior)
    for _ in range(ITERATIONS):
        # Rows: (W, Q, A, 1 GiB) / measured · theta ≈ (measured - overhead) / measured.
        normal = [[0.0] * 4 for _ in range(4)]
        rhs = [0.0] * 4
        for point, weight in zip(points, weights, strict=True):
            t, m = point.terms, point.measured
            row = [t.weights / m, t.quantized / m, t.activations / m, GIB / m]
            target = (m - t.overhead) / m
            for i in range(4):
                rhs[i] += weight * row[i] * target
                for j in range(4):
                    normal[i][j] += weight * row[i] * row[j]
        for i in range(4):
            normal[i][i] += ridge[i]
            rhs[i] += ridge[i] * prior[i]
        theta = _solve(normal, rhs)
        for i in range(3):
            theta[i] = min(max(theta[i], MIN_SCALE), MAX_SCALE)
        residuals = [abs(_apply(theta, p) / p.measured - 1) for p in points]
        weights = [1.0 if r <= HUBER else HUBER / r for r in residuals]
    residuals = [abs(_apply(theta, p) / p.measured - 1) for p in points]
    return Correction(
        weights=theta[0],
        quantized=theta[1],
        activations=theta[2],
        offset=theta[3] * GIB,
        trials=len(points),
        error=high_quantile(residuals),
    )


def high_quantile(values: Sequence[float], q: float = ERROR_QUANTILE) -> float:
    """The ``ceil(q x n)``-th smallest of ``values``: their maximum below ``1 / (1 - q)`` values."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def _apply(theta: Sequence[float], point: Sample) -> float:
    return Correction(theta[0], theta[1], theta[2], theta[3] * GIB).apply(point.terms)


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the ridge keeps the system well posed)."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            factor = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= factor * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def samples(
    rows: Iterable[TrialRow], model: ModelInfo, spec: StudySpec, caps: Capabilities
) -> tuple[list[Sample], list[Sample]]:
    """(device samples, host samples) of the finished trials in ``rows`` that measured their peaks here.

    A trial counts when it finished (status ok, measured memory) on this GPU kind: its configuration's
    terms are computed again, so the stored prediction's age does not matter.
    """
    device: list[Sample] = []
    host: list[Sample] = []
    for row in rows:
        m = row.measurement
        if row.config is None or m is None or m.status != "ok" or not _same_machine(m, caps):
            continue
        terms = predict_terms(model, row.config, spec, caps)
        if terms is None:
            continue
        measured = row.memory_bytes if row.memory_bytes is not None else _counted(m, spec)
        if measured:
            device.append(Sample(terms[0], float(measured)))
        if m.peak_host_bytes and caps.cuda:
            host.append(Sample(terms[1], float(m.peak_host_bytes)))
    return device, host


def _counted(m: Measurement, spec: StudySpec) -> int | None:
    return m.memory_for(spec.memory_metric)


def _same_machine(m: Measurement, caps: Capabilities) -> bool:
    return m.device == ("cuda" if caps.cuda else "cpu")


def calibrate(rows: Iterable[TrialRow], model: ModelInfo, spec: StudySpec, caps: Capabilities) -> Calibration:
    """The calibration of ``model``'s memory model on the study's finished trials (``rows``)."""
    device, host = samples(rows, model, spec, caps)
    if not caps.cuda:
        return Calibration(device=fit(device), host=fit(device))  # on the CPU the budget counts host RAM
    return Calibration(device=fit(device), host=fit(host))


# -- how wrong the model is ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorSummary:
    """The memory model's error over finished trials: relative error = predicted / measured - 1."""

    trials: int
    median_abs: float | None
    """Median of the absolute relative errors; None without trials."""
    worst_abs: float | None
    worst_trial: int | None
    """Number of the trial with the worst error."""
    within: float | None
    """Share of trials whose error is within ±``tolerance``."""
    tolerance: float = WITHIN

    def describe(self) -> str:
        if not self.trials or self.median_abs is None or self.worst_abs is None or self.within is None:
            return "no finished trial with a prediction yet"
        return (
            f"median {self.median_abs:.0%}, worst {self.worst_abs:.0%} (#{self.worst_trial}), "
            f"{self.within:.0%} within ±{self.tolerance:.0%} ({self.trials} trials)"
        )

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "trials": self.trials,
            "median_abs_error": self.median_abs,
            "worst_abs_error": self.worst_abs,
            "worst_trial": self.worst_trial,
            "share_within": self.within,
            "tolerance": self.tolerance,
        }


def error_summary(pairs: Iterable[tuple[int, float, float]], tolerance: float = WITHIN) -> ErrorSummary:
    """Summary of (trial number, predicted, measured) triples; pairs with no measured figure are left out."""
    errors = [(number, predicted / measured - 1) for number, predicted, measured in pairs if measured > 0]
    if not errors:
        return ErrorSummary(0, None, None, None, None, tolerance)
    absolute = [abs(e) for _, e in errors]
    worst = max(range(len(errors)), key=lambda i: absolute[i])
    return ErrorSummary(
        trials=len(errors),
        median_abs=statistics.median(absolute),
        worst_abs=absolute[worst],
        worst_trial=errors[worst][0],
        within=sum(a <= tolerance + 1e-12 for a in absolute) / len(errors),
        tolerance=tolerance,
    )


def row_errors(rows: Iterable[TrialRow], *, feasible_only: bool = False, raw: bool = False) -> ErrorSummary:
    """The error of the predictions stored on finished trials (``raw``: before calibration).

    ``feasible_only`` keeps the trials within budget (what a headline study reports).
    """
    pairs = []
    for row in rows:
        predicted = row.predicted_raw_bytes if raw else row.predicted_bytes
        if row.category not in ("front", "dominated", "infeasible") or predicted is None or not row.memory_bytes:
            continue
        if feasible_only and not row.feasible:
            continue
        pairs.append((row.number, float(predicted), float(row.memory_bytes)))
    return error_summary(pairs)


def relative_error(predicted: float | None, measured: float | None) -> float | None:
    """``predicted / measured - 1``; None when either is missing."""
    if predicted is None or not measured or math.isnan(predicted):
        return None
    return predicted / measured - 1


def fit_configs(
    model: ModelInfo, spec: StudySpec, caps: Capabilities, measured: Sequence[tuple[TrialConfig, float]]
) -> Correction:
    """Convenience for recorded data: the device correction fitted on (configuration, measured bytes) pairs."""
    points = []
    for config, value in measured:
        terms = predict_terms(model, config, spec, caps)
        if terms is not None:
            points.append(Sample(terms[0], value))
    return fit(points)
