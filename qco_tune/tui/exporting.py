"""What the export screen shows and writes: the same text as ``qco-tune export``. Headless.

The seam is ``export_text``: it renders through ``qco_tune.loop.export_study.prepare_export`` (the
exporter the CLI uses) and falls back to the configuration as JSON (``TrialConfig.to_dict``) only
where that exporter is not installed or cannot describe the study (e.g. one without a stored spec).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qco_tune.store.studydata import StudyData

Language = Literal["python", "json", "toml"]


@dataclass(frozen=True)
class ExportText:
    text: str
    language: Language
    filename: str
    """A file name to suggest (in the current folder)."""
    warning: str | None = None
    """Set when the trial did not finish feasibly, or when this is the JSON fallback."""
    fallback: bool = False


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "study"


def suggested_name(study: str, number: int, language: Language) -> str:
    suffix = {"python": "py", "json": "json", "toml": "toml"}[language]
    return f"tuned-{_safe(study)}-trial{number}.{suffix}"


def export_text(data: StudyData, number: int, fmt: Language = "python") -> ExportText:
    """Trial ``number`` of ``data`` rendered as ``qco-tune export STUDY --trial N --format FMT --allow-failed`` does."""
    try:
        from qco_tune.loop.export_study import ExportError, prepare_export
    except ImportError:  # the exporter is not part of this installation: show the configuration itself
        return _json_fallback(data, number, "the Python exporter is not available here")
    try:
        prepared = prepare_export(data.name, data.attrs, data.trials, trial=number, allow_failed=True)
        text = prepared.render(fmt)
    except (ExportError, ValueError, KeyError) as exc:
        return _json_fallback(data, number, str(exc))
    return ExportText(text, fmt, suggested_name(data.name, number, fmt), warning=prepared.warning)


def _json_fallback(data: StudyData, number: int, why: str) -> ExportText:
    row = data.row(number)
    if row is None or row.config is None:
        raise ValueError(f"trial {number} has no stored configuration to export")
    text = json.dumps(row.config.to_dict(), indent=2) + "\n"
    return ExportText(
        text, "json", suggested_name(data.name, number, "json"), warning=f"configuration only: {why}", fallback=True
    )


def write_export(export: ExportText, path: Path, *, overwrite: bool = False) -> Path:
    """Write ``export`` to ``path`` (``FileExistsError`` unless ``overwrite``); returns the absolute path."""
    path = path.expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(export.text, encoding="utf-8")
    return path.resolve()
