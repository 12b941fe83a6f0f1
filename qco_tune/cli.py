"""The ``qco-tune`` command. Imports optuna, torch and textual only inside the commands that need them."""

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
    from qco_tune.modelref import ModelError
    from qco_tune.presets import UnknownPreset
    from qco_tune.spec import SpecError
    from qco_tune.storage import StorageError
    from qco_tune.study import StudyError

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
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            click.echo(f"error: {first}" if known else f"error: {type(exc).__name__}: {first}", err=True)
            sys.exit(EXIT_USAGE if known else 1)

    return wrapper  # type: ignore[return-value]


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


@cli.command()
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", help="Preset name, Hugging Face hub id (local cache) or local diffusers folder.")
@click.option("--weights", type=click.Choice(["real", "random"]), help="Real weights or a random-weight preset.")
@click.option("--budget", metavar="SIZE", help='VRAM budget, e.g. "16GiB".')
@click.option("--trials", type=int, help="Trials to run in the study in total (seeded baselines included).")
@click.option("--timeout", metavar="DURATION", help='Wall-clock limit for this run, e.g. "90m".')
@click.option("--trial-timeout", metavar="DURATION", help="Time limit of one trial (a hang is killed after it).")
@click.option("--study", "study_name", metavar="NAME", help="Study name (default: from the spec).")
@click.option("--allow-changed-spec", is_flag=True, help="Continue a study whose stored spec differs.")
@storage_option
@friendly
def run(
    spec_file: Path | None,
    model: str | None,
    weights: str | None,
    budget: str | None,
    trials: int | None,
    timeout: str | None,
    trial_timeout: str | None,
    study_name: str | None,
    allow_changed_spec: bool,
    storage: str | None,
) -> None:
    """Run (or resume) a study. Without SPEC_FILE or --model: the embedded tiny default."""
    from qco_tune.progress import LiveObserver
    from qco_tune.spec import apply_overrides, load_default_spec, load_spec
    from qco_tune.storage import mask_url, storage_url
    from qco_tune.study import run_study

    if spec_file is not None:
        spec = load_spec(spec_file)
    elif model is not None:
        spec = apply_overrides(load_default_spec(), model=model, name=study_name or "")
    else:
        spec = load_default_spec()
    spec = apply_overrides(
        spec,
        model=model,
        weights=weights,
        budget=budget,
        trials=trials,
        timeout=timeout,
        trial_timeout=trial_timeout,
        name=study_name,
    )
    url = storage_url(storage)
    with LiveObserver() as observer:
        observer.message(f"storage {mask_url(url)}")
        try:
            result = run_study(spec, storage_url=url, observer=observer, allow_changed_spec=allow_changed_spec)
        except KeyboardInterrupt:
            observer.close()
            click.echo(
                f"interrupted: the running trial was stopped and recorded; `qco-tune run` again resumes {spec.name!r}",
                err=True,
            )
            sys.exit(EXIT_INTERRUPTED)
    from qco_tune.report import print_run_result

    print_run_result(result)


@cli.command("list")
@storage_option
@friendly
def list_studies(storage: str | None) -> None:
    """Studies in the storage: model, GPU, budget, trials, best feasible latency."""
    from qco_tune.report import print_study_list

    print_study_list(storage)


@cli.command()
@click.argument("study_name", metavar="STUDY")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (front, baselines, every trial).")
@storage_option
@friendly
def show(study_name: str, as_json: bool, storage: str | None) -> None:
    """A study's Pareto front, seeded baselines, and infeasible, failed and skipped trials with reasons."""
    from qco_tune.report import print_study, print_study_json

    if as_json:
        print_study_json(study_name, storage)
    else:
        print_study(study_name, storage)


@cli.command()
@click.argument("study_name", metavar="[STUDY]", required=False)
@click.option("--optuna-api", is_flag=True, help="Read through Optuna's API instead of its tables (slower).")
@click.option("--light", is_flag=True, help="Start with the light theme (ctrl+t switches).")
@click.option("--poll", type=float, default=2.0, show_default=True, help="Seconds between checks for new trials.")
@storage_option
@friendly
def tui(study_name: str | None, optuna_api: bool, light: bool, poll: float, storage: str | None) -> None:
    """Browse studies: Pareto front, trials, export, comparison; follows running studies live."""
    from qco_tune.storage import storage_url
    from qco_tune.tui.app import DARK_THEME, LIGHT_THEME, QcoTuneApp

    app = QcoTuneApp(
        storage_url(storage),
        study=study_name,
        optuna_api=optuna_api,
        poll_interval=max(0.2, poll),
        theme=LIGHT_THEME if light else DARK_THEME,
    )
    app.run()


def main() -> None:
    """Entry point of the ``qco-tune`` script and ``python -m qco_tune``."""
    cli(prog_name="qco-tune")


if __name__ == "__main__":
    main()
