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
EXIT_INTERRUPTED = 130


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or an unusable environment: shown as one line, no traceback."""
    from qco_tune.core.modelref import ModelError
    from qco_tune.core.presets import UnknownPreset
    from qco_tune.core.spec import SpecError
    from qco_tune.loop.context import StudyError
    from qco_tune.store.storage import StorageError

    return (SpecError, ModelError, UnknownPreset, StorageError, StudyError, ValueError, FileNotFoundError)


def friendly(func: F) -> F:
    """Turn expected failures into ``error: <one line>`` and a non-zero exit; tracebacks only with QCO_DEBUG=1."""

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
            known = isinstance(exc, _user_errors())
            click.echo(f"error: {_first_line(exc)}" if known else f"error: {_unexpected(exc)}", err=True)
            sys.exit(EXIT_USAGE if known else 1)

    return wrapper  # type: ignore[return-value]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _unexpected(exc: BaseException) -> str:
    """An unexpected failure in one line. Optuna wraps every database error of a session in one generic
    message ("An exception is raised during the commit..."): the database's own reason is the one worth showing."""
    from qco_tune.store.storage import mask_url

    cause = exc.__cause__
    if type(exc).__name__ == "StorageInternalError" and cause is not None:
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
    help="Optuna storage URL (default: $QCO_STORAGE or sqlite:///studies/qco.db).",
)
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
