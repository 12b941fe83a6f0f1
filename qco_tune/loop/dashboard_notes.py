"""Each finished trial's exported snippet as its note in optuna-dashboard (``qco-tune export --dashboard-notes``).

The note is written with optuna-dashboard's own ``save_note`` (an optional dependency: the dashboard
reads the note from the study's system attributes in its own format), so the dashboard shows, beside a
trial's figures, the code that reproduces its configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qco_tune.loop.export_study import ExportError, prepare_export

if TYPE_CHECKING:
    import optuna


def write_dashboard_notes(study: optuna.Study) -> int:
    """Write the Python snippet of every COMPLETE trial of ``study`` into its dashboard note; how many.

    Over-budget trials get theirs too, with the exporter's warning at its top, as ``--allow-failed`` writes it.
    """
    import optuna
    from optuna.trial import TrialState

    try:
        from optuna_dashboard import save_note
    except ImportError:
        raise ExportError("--dashboard-notes needs optuna-dashboard: pip install optuna-dashboard") from None
    trials = study.get_trials(deepcopy=False)
    written = 0
    for frozen in trials:
        if frozen.state != TrialState.COMPLETE:
            continue
        try:
            prepared = prepare_export(
                study.study_name, study.user_attrs, trials, trial=frozen.number, allow_failed=True
            )
        except ExportError:
            continue  # a trial without a configuration (another tool's): nothing to write
        save_note(optuna.Trial(study, frozen._trial_id), f"```python\n{prepared.render('python')}```\n")
        written += 1
    return written
