"""The ``qco-tune`` command. Imports optuna, torch and textual only inside the commands that need them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from qco_tune.cli import groups as _groups  # noqa: F401  (registers the presets and bench groups)
from qco_tune.cli.common import (
    EXIT_INTERRUPTED,
    artifacts_option,
    cli,
    format_option,
    friendly,
    spec_flags,
    storage_option,
    study_argument,
    verbosity_options,
)


@cli.command()
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@spec_flags
@click.option("--study", "--study-name", "study_name", metavar="NAME", help="Study name (default: from the spec).")
@click.option("--allow-changed-spec", is_flag=True, help="Continue a study whose stored spec differs.")
@click.option("--prepare-only", is_flag=True, help="Create the study and queue its baselines; workers run the trials.")
@storage_option
@artifacts_option
@verbosity_options
@friendly
def run(
    spec_file: Path | None,
    study_name: str | None,
    allow_changed_spec: bool,
    prepare_only: bool,
    storage: str | None,
    compile_artifacts: Path | None,
    verbose: int,
    quiet: int,
    **flags: str | None,
) -> None:
    """Run (or resume) a study. Without SPEC_FILE or --model: the embedded tiny default.

    With --model and no SPEC_FILE the study times the model's usual workload (FLUX.1: 1024x1024 in 28
    steps; Wan2.1: 480x832, 33 frames). Every spec field has a flag (e.g. --steps 4, --compile
    none,regional) that overrides the file or those defaults.

    Ctrl-C or `kill -INT` (even where SIGINT was inherited ignored) and SIGTERM stop it: the running
    trial is recorded as interrupted and queued again, and the next run resumes the study.

    On a terminal: a live panel. Otherwise (a pipe, a file, a job runner): timestamped log lines.
    """
    from qco_tune.cli.progress import LiveObserver, configure_logging, log_level
    from qco_tune.core.spec import apply_overrides, load_default_spec, load_spec, spec_for_model
    from qco_tune.loop.study import run_study
    from qco_tune.store.storage import mask_url, storage_url

    model = (flags.get("model") or "").strip()
    if spec_file is not None:
        spec = load_spec(spec_file)
    elif model and model.lower() != load_default_spec().model:
        spec = spec_for_model(model)
    else:
        spec = load_default_spec()
    given = {key: value for key, value in flags.items() if value is not None}
    spec = apply_overrides(spec, name=study_name, **given)
    url = storage_url(storage)
    level = log_level(verbose, quiet)
    configure_logging(level)
    with LiveObserver(level=level) as observer:
        observer.message(f"storage {mask_url(url)}")
        try:
            result = run_study(
                spec,
                storage_url=url,
                observer=observer,
                allow_changed_spec=allow_changed_spec,
                prepare_only=prepare_only,
                compile_artifacts=compile_artifacts,
            )
        except KeyboardInterrupt:
            observer.close()
            click.echo(
                f"interrupted: the running trial was stopped and recorded; `qco-tune run` again resumes {spec.name!r}",
                err=True,
            )
            sys.exit(EXIT_INTERRUPTED)
    from qco_tune.cli.report import print_run_result

    print_run_result(result)


@cli.command("list")
@storage_option
@format_option
@friendly
def list_studies(storage: str | None, fmt: str) -> None:
    """Studies in the storage: model, GPU, budget, trials ran and skipped, best feasible latency, speed-up."""
    from qco_tune.cli.report import print_study_list

    print_study_list(storage, as_json=fmt == "json")


@cli.command()
@study_argument
@format_option
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@storage_option
@friendly
def show(study_name: str, fmt: str, as_json: bool, storage: str | None) -> None:
    """A study's Pareto front, seeded baselines, and infeasible, failed and skipped trials with reasons.

    As JSON (-f json): the front, baselines and every trial.
    """
    from qco_tune.cli.show import print_study, print_study_json

    if as_json or fmt == "json":
        print_study_json(study_name, storage)
    else:
        print_study(study_name, storage)


@cli.command()
@study_argument
@click.option(
    "--trial", "trial", default="best", show_default=True, help="'best' (fastest feasible) or a trial number."
)
@click.option("--model", metavar="ID_OR_PATH", help="Load this hub id or local folder instead of the study's model.")
@click.option(
    "--format",
    "fmt",
    default="python",
    show_default=True,
    help="python (a runnable snippet), json or toml (the configuration).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@click.option("--allow-failed", is_flag=True, help="Export a trial that failed, went over budget or never ran.")
@click.option(
    "--compile-artifacts",
    "compile_artifacts",
    metavar="PATH",
    default=None,
    help="The snippet loads the study's compile artefacts from PATH (where the deployment keeps a copy of "
    "the study's folder of them) before compiling, so its first call starts warm.",
)
@click.option(
    "--dashboard-notes",
    is_flag=True,
    help="Write every finished trial's Python snippet into its optuna-dashboard note instead of printing one.",
)
@storage_option
@friendly
def export(
    study_name: str,
    trial: str,
    model: str | None,
    fmt: str,
    output: Path | None,
    force: bool,
    allow_failed: bool,
    compile_artifacts: str | None,
    dashboard_notes: bool,
    storage: str | None,
) -> None:
    """A trial's configuration as Python code to paste into a project (or as JSON/TOML)."""
    from qco_tune.loop.export_study import ExportError, check_format, parse_trial_choice, prepare_export
    from qco_tune.loop.summary import load_stored_study

    if dashboard_notes:
        from qco_tune.loop.dashboard_notes import write_dashboard_notes

        written = write_dashboard_notes(load_stored_study(study_name, storage))
        click.echo(f"wrote the snippets of {written} trial(s) into their optuna-dashboard notes", err=True)
        return
    check_format(fmt)
    choice = parse_trial_choice(trial)
    if output is not None and output.exists() and not force:
        raise ExportError(f"{output} exists; pass --force to overwrite it")
    study = load_stored_study(study_name, storage)
    prepared = prepare_export(
        study_name,
        study.user_attrs,
        study.get_trials(deepcopy=False),
        trial=choice,
        model=model,
        allow_failed=allow_failed,
    )
    text = prepared.render(fmt, compile_artifacts=compile_artifacts)
    if prepared.warning:
        click.echo(f"warning: {prepared.warning}", err=True)
    if compile_artifacts and (fmt != "python" or prepared.config.compile == "none"):
        why = f"the {fmt} format has no code" if fmt != "python" else "the trial does not compile"
        click.echo(f"warning: --compile-artifacts ignored: {why}", err=True)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output} (trial {prepared.header.trial}, {fmt})", err=True)


@cli.command()
@click.argument("study_name", metavar="[STUDY]", required=False)
@click.option("--optuna-api", is_flag=True, help="Read through Optuna's API instead of its tables (slower).")
@click.option("--light", is_flag=True, help="Start with the light theme (ctrl+t switches).")
@click.option("--poll", type=float, default=2.0, show_default=True, help="Seconds between checks for new trials.")
@storage_option
@friendly
def tui(study_name: str | None, optuna_api: bool, light: bool, poll: float, storage: str | None) -> None:
    """Browse studies: Pareto front, trials, export, comparison; follows running studies live."""
    from qco_tune.store.storage import storage_url
    from qco_tune.tui.app import DARK_THEME, LIGHT_THEME, QcoTuneApp

    app = QcoTuneApp(
        storage_url(storage),
        study=study_name,
        optuna_api=optuna_api,
        poll_interval=max(0.2, poll),
        theme=LIGHT_THEME if light else DARK_THEME,
    )
    app.run()


@cli.command()
@storage_option
@click.option(
    "--study", "--study-name", "studies", multiple=True, metavar="NAME", help="Serve only this study (repeatable)."
)
@click.option("--gpu", type=click.IntRange(min=0), help="Run trials on this GPU index (CUDA_VISIBLE_DEVICES).")
@click.option("--poll", default=30.0, show_default=True, help="Seconds between looks for work when idle.")
@click.option("--exit-when-idle", is_flag=True, help="Stop when no study has work left instead of waiting.")
@artifacts_option
@verbosity_options
@friendly
def worker(
    storage: str | None,
    studies: tuple[str, ...],
    gpu: int | None,
    poll: float,
    exit_when_idle: bool,
    compile_artifacts: Path | None,
    verbose: int,
    quiet: int,
) -> None:
    """Take trials of the studies in a shared storage and run them on this machine's GPU.

    Stops cleanly on SIGTERM or Ctrl-C: the running trial is stopped, recorded and queued again.
    Without a terminal its progress is timestamped log lines.
    """
    from qco_tune.cli.progress import LiveObserver, configure_logging, log_level
    from qco_tune.loop.worker import run_worker

    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    level = log_level(verbose, quiet)
    configure_logging(level)
    with LiveObserver(level=level) as observer:
        result = run_worker(
            url=storage,
            study_names=studies,
            observer=observer,
            poll_s=poll,
            exit_when_idle=exit_when_idle,
            compile_artifacts=compile_artifacts,
        )
    ran = ", ".join(f"{name}: {n}" for name, n in result.ran.items()) or "none"
    click.echo(f"worker stopped ({result.stopped}); trials run: {ran}")


@cli.command()
@click.argument("studies", nargs=-1, metavar="STUDY...")
@click.option("--replay", "replay_from", metavar="STUDY", help="Queue this study's Pareto configurations...")
@click.option("--into", "replay_into", metavar="STUDY", help="...into this study, to be measured on its GPU.")
@format_option
@storage_option
@friendly
def compare(
    studies: tuple[str, ...], replay_from: str | None, replay_into: str | None, fmt: str, storage: str | None
) -> None:
    """The same configurations side by side in studies made on different GPUs.

    With --replay A --into B: queue A's Pareto configurations in B; `qco-tune run` or a worker on
    B's GPU then measures them.
    """
    from qco_tune.cli.report import print_comparison
    from qco_tune.loop.summary import load_stored_study

    if replay_from or replay_into:
        if not (replay_from and replay_into):
            raise click.UsageError("--replay and --into go together")
        from qco_tune.loop.crossgpu import replay

        queued = replay(load_stored_study(replay_from, storage), load_stored_study(replay_into, storage))
        click.echo(f"queued {len(queued)} configuration(s) of {replay_from!r} in {replay_into!r}")
        for config in queued:
            click.echo(f"  {config.describe()}")
        return
    if len(studies) < 2:
        raise click.UsageError("name at least two studies to compare")
    loaded = [load_stored_study(name, storage) for name in studies]
    if fmt == "json":
        from qco_tune.loop.crossgpu import comparison_json
        from qco_tune.loop.summary import dumps

        click.echo(dumps(comparison_json(loaded)))
    else:
        print_comparison(loaded)


@cli.command()
@study_argument
@click.option("-y", "--yes", is_flag=True, help="Delete without asking.")
@storage_option
@click.option(
    "--compile-artifacts",
    "compile_artifacts",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder of compile artefacts the study used, if not the default (its own folder there is deleted).",
)
@friendly
def delete(study_name: str, yes: bool, storage: str | None, compile_artifacts: Path | None) -> None:
    """Delete a study: its trials from the storage, and its compile caches on this host.

    Like `optuna delete-study`, plus the study's folders qco-tune keeps (see the README for what stays).
    """
    from qco_tune.loop.deletion import delete_study
    from qco_tune.loop.summary import load_stored_study
    from qco_tune.store.storage import mask_url, storage_url

    url = storage_url(storage)
    study = load_stored_study(study_name, url)  # refused at once (one line) when it is not there
    trials = len(study.get_trials(deepcopy=False))
    if not yes:
        click.confirm(f"delete study {study_name!r} and its {trials} trial(s) from {mask_url(url)}?", abort=True)
    deletion = delete_study(study_name, url, compile_artifacts)
    click.echo(f"deleted study {study_name!r} ({deletion.trials} trial(s)) from {mask_url(url)}")
    for folder in deletion.removed:
        click.echo(f"  removed {folder}")
    for folder in deletion.kept:
        click.echo(f"  kept {folder} (keyed by study name only: another storage's study {study_name!r} may use it)")


def main() -> None:
    """Entry point of the ``qco-tune`` script and ``python -m qco_tune``."""
    cli(prog_name="qco-tune")


if __name__ == "__main__":
    main()
