"""Choosing a stored trial to export and gathering what the exporter needs from its study.

Reads study attributes and trials duck-typed (Optuna's ``FrozenTrial`` or the TUI's stored
trials), so the CLI and the TUI share it and it needs no optuna import. Every refusal is an
``ExportError`` with a one-line message.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qco_tune import __version__
from qco_tune.core.config import TrialConfig
from qco_tune.core.errors import InputError
from qco_tune.core.keys import CALL_KWARGS_KEY, CONFIG_ATTR, GPU_ATTR, MODEL_ATTR, SPEC_ATTR
from qco_tune.core.paths import cache_dir
from qco_tune.core.presets import get_preset
from qco_tune.core.records import ModelInfo
from qco_tune.core.studyspec import Workload
from qco_tune.core.units import format_size
from qco_tune.export.plan import ExportHeader
from qco_tune.export.render import FORMATS, render
from qco_tune.search.pareto import TrialLike, TrialRow, row_from_trial, summarize

CALL_PARAMETERS_KEY = CALL_KWARGS_KEY
"""``Measurement.extra`` key where a trial records the names of the keyword arguments its pipeline call used."""


class ExportError(InputError):
    """A trial cannot be exported as asked; the message is one line and says what to do."""


@dataclass(frozen=True)
class TrialExport:
    """Everything ``export.render`` needs for one trial of a study."""

    config: TrialConfig
    model: ModelInfo
    workload: Workload
    dtype: str
    model_ref: str
    header: ExportHeader
    call_parameters: tuple[str, ...] | None = None
    device: str = "cuda"
    """Where the trial was measured, and so where the snippet runs (``cpu`` for a study without CUDA)."""

    @property
    def warning(self) -> str | None:
        return self.header.warning

    def render(self, fmt: str = "python", compile_artifacts: str | None = None) -> str:
        return render(
            fmt,
            self.config,
            model=self.model,
            workload=self.workload,
            dtype=self.dtype,
            model_ref=self.model_ref,
            header=self.header,
            call_parameters=self.call_parameters,
            compile_artifacts=compile_artifacts,
            device=self.device,
        )


def parse_trial_choice(text: str | int) -> str | int:
    """``"best"`` or a trial number from what the user wrote after ``--trial``."""
    if isinstance(text, int):
        choice = text
    elif text.strip().lower() == "best":
        return "best"
    else:
        try:
            choice = int(text.strip().removeprefix("#"))
        except ValueError:
            raise ExportError(f"--trial must be 'best' or a trial number, got {text!r}") from None
    if choice < 0:
        raise ExportError(f"--trial must be 'best' or a trial number, got {text!r}")
    return choice


def _select(study: str, trials: Sequence[TrialLike], choice: str | int, budget: int | None) -> tuple[TrialLike, bool]:
    """The trial named by ``choice`` and whether it is the study's best."""
    summary = summarize(trials, budget)
    if choice == "best":
        if summary.best is None:
            raise ExportError(
                f"study {study!r} has no feasible trial yet; pick one with --trial N (and --allow-failed to export "
                "a trial that failed or went over budget)"
            )
        number = summary.best.number
    else:
        number = int(choice)
    trial = next((t for t in trials if t.number == number), None)
    if trial is None:
        numbers = sorted(t.number for t in trials)
        known = f"trials {numbers[0]}-{numbers[-1]}" if numbers else "no trials yet"
        raise ExportError(f"study {study!r} has no trial {number} ({known})")
    return trial, summary.best is not None and summary.best.number == number


def _problem(row: TrialRow, budget: int | None) -> str | None:
    """Why a trial's configuration is not a measured, feasible one; None when it is."""
    if row.feasible:
        return None
    status = row.measurement.status if row.measurement else None
    reason = row.reason or "no reason recorded"
    if row.category == "infeasible":
        return (
            f"trial {row.number} went over the budget (peak {format_size(row.memory_bytes)}, "
            f"budget {format_size(budget)}): this configuration does not fit it"
        )
    if row.category == "skipped":
        return f"trial {row.number} never ran ({reason})"
    if row.category in ("running", "waiting"):
        return f"trial {row.number} has not finished"
    return f"trial {row.number} failed ({status or 'failed'}: {reason}): this configuration may not run"


def _config(study: str, trial: TrialLike) -> TrialConfig:
    """The trial's stored configuration; a newer format or a broken one is a one-line error."""
    data = trial.user_attrs.get(CONFIG_ATTR)
    try:
        if isinstance(data, dict):
            return TrialConfig.from_dict(data)
        if trial.params:
            return TrialConfig.from_params(dict(trial.params))
    except (TypeError, ValueError) as exc:
        raise ExportError(f"study {study!r}, trial {trial.number}: {exc}") from None
    raise ExportError(f"study {study!r}, trial {trial.number} has no stored configuration")


def _model(study: str, attrs: Mapping[str, Any]) -> ModelInfo:
    data = attrs.get(MODEL_ATTR)
    if not isinstance(data, dict):
        raise ExportError(f"study {study!r} stores no model description; it was not made by `qco-tune run`")
    try:
        return ModelInfo.from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise ExportError(f"study {study!r}: unreadable model description ({exc})") from None


def default_model_ref(model: ModelInfo) -> tuple[str, tuple[str, ...]]:
    """What the snippet loads when ``--model`` is not given, and comment lines that explain it.

    A random-weight preset of a published model loads that model's hub id; the built-in tiny preset
    loads the checkpoint qco-tune materialised for the trials; a hub id or a local folder loads itself.
    """
    if model.source == "preset":
        preset = get_preset(model.reference)
        if preset.hub_id:
            return preset.hub_id, (
                f"The study measured random weights of the same architecture (preset {preset.name!r}); "
                f"this loads {preset.hub_id}.",
            )
        folder = cache_dir() / "presets" / preset.name
        return str(folder), (
            f"The study measured the random-weight preset {preset.name!r}: this loads the checkpoint qco-tune "
            "built for it. Pass --model to load another.",
        )
    if model.source == "local" and model.path:
        return model.path, ()
    return model.reference, ()


def _date(trial: TrialLike) -> str | None:
    value = getattr(trial, "datetime_complete", None) or getattr(trial, "datetime_start", None)
    return value.date().isoformat() if isinstance(value, datetime.datetime) else None


def prepare_export(
    study: str,
    attrs: Mapping[str, Any],
    trials: Sequence[TrialLike],
    *,
    trial: str | int = "best",
    model: str | None = None,
    allow_failed: bool = False,
) -> TrialExport:
    """What exporting ``trial`` (``"best"`` or a number) of ``study`` takes; ``ExportError`` when it cannot.

    A trial that failed, went over budget, never ran or has not finished is refused unless
    ``allow_failed``; then the export carries a warning. ``model`` replaces the model reference.
    """
    from qco_tune.core.spec import spec_from_dict

    spec_data = attrs.get(SPEC_ATTR)
    if not isinstance(spec_data, dict):
        raise ExportError(f"study {study!r} stores no spec; it was not made by `qco-tune run`")
    spec = spec_from_dict(spec_data)
    chosen, is_best = _select(study, trials, parse_trial_choice(trial), spec.vram_budget)
    row = row_from_trial(chosen)
    problem = _problem(row, spec.vram_budget)
    if problem and not allow_failed:
        raise ExportError(f"{problem}; pass --allow-failed to export it anyway")
    config = _config(study, chosen)
    info = _model(study, attrs)
    model_ref, notes = (model, ()) if model else default_model_ref(info)
    measurement = row.measurement
    on_cpu = measurement is not None and measurement.device == "cpu"
    extra = measurement.extra if measurement else {}
    parameters = extra.get(CALL_PARAMETERS_KEY)
    header = ExportHeader(
        study=study,
        trial=row.number,
        best=is_best,
        qco_version=__version__,
        latency_s=row.latency_s,
        memory_bytes=row.memory_bytes,
        memory_metric="host" if on_cpu else spec.memory_metric,
        budget_bytes=spec.vram_budget,
        gpu="CPU" if on_cpu else _text(attrs.get(GPU_ATTR)),
        date=_date(chosen),
        notes=notes,
        warning=problem,
    )
    return TrialExport(
        config=config,
        model=info,
        workload=spec.workload,
        dtype=spec.dtype,
        model_ref=model_ref,
        header=header,
        call_parameters=tuple(str(p) for p in parameters) if isinstance(parameters, list) else None,
        device="cpu" if on_cpu else "cuda",
    )


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return fmt
