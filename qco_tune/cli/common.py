"""What every ``qco-tune`` command shares: the group, error handling, and the storage and spec options."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from qco_tune import __version__

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "QCO_DEBUG"
EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
STORAGE_FAILURE = "StorageInternalError"
"""Optuna's wrapper of a failed database query (not imported: optuna loads only in the commands that use it)."""


def _input_errors() -> tuple[type[BaseException], ...]:
    """Bad input (a flag, a spec, a name, a file): one line, exit status 2."""
    from qco_tune.core.errors import InputError
    from qco_tune.loop.context import StudyError

    return (InputError, StudyError)


def _runtime_errors() -> tuple[type[BaseException], ...]:
    """An environment that does not let the command finish (a storage, the disk, a build): one line, status 1."""
    from qco_tune.core.presets.cache import DiskSpaceError
    from qco_tune.measure.materializing import MaterializeError
    from qco_tune.store.storage import StorageError
    from qco_tune.store.studydata import DataError

    return (StorageError, DataError, DiskSpaceError, MaterializeError, OSError)


def friendly(func: F) -> F:
    """Turn expected failures into ``error: <one line>`` (status 2 for bad input, 1 for a failure of the
    environment); anything else is reported as unexpected, with its type (status 1). Tracebacks only with
    QCO_DEBUG=1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            if isinstance(exc, _input_errors()):
                click.echo(f"error: {_first_line(exc)}", err=True)
                sys.exit(EXIT_USAGE)
            if isinstance(exc, _runtime_errors()):
                click.echo(f"error: {_first_line(exc)}", err=True)
                sys.exit(EXIT_FAILURE)
            click.echo(f"error: {_unexpected(exc)}", err=True)
            if type(exc).__name__ != STORAGE_FAILURE:  # the database's own reason: not (necessarily) a bug
                click.echo(f"  (unexpected: set {DEBUG_ENV}=1 for the traceback, and please report it)", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _unexpected(exc: BaseException) -> str:
    """An unexpected failure in one line. Optuna wraps every database error of a session in one generic
    message ("An exception is raised during the commit..."): the database's own reason is the one worth showing."""
    from qco_tune.store.storage import mask_url

    cause = exc.__cause__
    if type(exc).__name__ == STORAGE_FAILURE and cause is not None:
        orig = getattr(cause, "orig", None) or cause
        return mask_url(f"the storage failed: {type(orig).__name__}: {_first_line(orig)}")
    return mask_url(f"{type(exc).__name__}: {_first_line(exc)}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qco-tune")
def cli() -> None:
    """Find the fastest quantization + torch.compile + offloading of a diffusers pipeline under a VRAM budget."""


storage_option = click.option(
    "--storage",
    metavar="URL",
    default=None,
    help="Optuna storage URL (default: $QCO_STORAGE, else $OPTUNA_STORAGE, else sqlite:///studies/qco.db).",
)
format_option = click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table (for reading) or json (plain JSON: one type per field, no Infinity or NaN).",
)


def study_argument(func: F) -> F:
    """The study a command reads: ``STUDY``, or ``--study-name NAME`` as the ``optuna`` CLI writes it."""

    @wraps(func)
    def wrapper(*args: Any, study_name: str | None, study_name_option: str | None, **kwargs: Any) -> Any:
        if study_name and study_name_option and study_name != study_name_option:
            raise click.UsageError(f"STUDY {study_name!r} and --study-name {study_name_option!r} differ")
        name = study_name or study_name_option
        if not name:
            raise click.UsageError("name the study: STUDY or --study-name NAME")
        return func(*args, study_name=name, **kwargs)

    option = click.option("--study-name", "study_name_option", metavar="NAME", help="The study, instead of STUDY.")
    return click.argument("study_name", metavar="STUDY", required=False)(option(wrapper))  # type: ignore[return-value]


def verbosity_options(func: F) -> F:
    """``-v``/``-q`` (repeatable): which progress lines are written (``cli.progress.log_level``)."""
    func = click.option("-q", "--quiet", count=True, help="Fewer lines: failed trials and warnings only.")(func)
    return click.option("-v", "--verbose", count=True, help="More lines: every phase of every trial.")(func)


artifacts_option = click.option(
    "--compile-artifacts",
    "compile_artifacts",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the studies' portable compile artefacts (default: <db stem>.compile-artifacts beside a "
    "SQLite storage, else qco-tune's cache dir).",
)


def spec_flags(func: F) -> F:
    """One option per spec field (``qco_tune.core.schema.FIELDS``): its flag and help come from the schema."""
    from qco_tune.core.schema import FIELDS

    for field in reversed([f for f in FIELDS if f.keyword != "name"]):
        flag = "--" + field.keyword.replace("_", "-")
        func = click.option(flag, field.keyword, default=None, metavar="VALUE", help=field.help_text)(func)
    return func
