"""Studies made on different GPUs side by side: loading them for ``compare`` and replaying one's
Pareto configurations into another so that they are measured on its GPU."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import REPLAYED_FROM_ATTR, SPEC_ATTR
from qco_tune.core.studyspec import dict_differences
from qco_tune.loop.context import StudyError
from qco_tune.loop.setup import load_summary
from qco_tune.search.compare import Comparison, compare_summaries

if TYPE_CHECKING:
    import optuna

COMPARABLE_FIELDS = ("model", "weights", "dtype", "workload", "memory_metric")
"""What two studies must share for their configurations to be compared."""


def check_comparable(studies: list[optuna.Study]) -> None:
    """``StudyError`` naming what differs when studies measured different things."""
    first = studies[0]
    for other in studies[1:]:
        if len(first.directions) != len(other.directions) or first.metric_names != other.metric_names:
            raise StudyError(
                f"{first.study_name!r} and {other.study_name!r} have different objectives "
                f"({first.metric_names} vs {other.metric_names})"
            )
        spec_a, spec_b = first.user_attrs.get(SPEC_ATTR) or {}, other.user_attrs.get(SPEC_ATTR) or {}
        diffs = dict_differences(
            {k: spec_a.get(k) for k in COMPARABLE_FIELDS}, {k: spec_b.get(k) for k in COMPARABLE_FIELDS}, sep=" vs "
        )
        if diffs:
            raise StudyError(
                f"{first.study_name!r} and {other.study_name!r} measured different things: {'; '.join(diffs[:3])}"
            )


def load_comparison(studies: list[optuna.Study]) -> Comparison:
    check_comparable(studies)
    return compare_summaries([(s.study_name, load_summary(s)) for s in studies])


def _queued_keys(study: optuna.Study) -> set[str]:
    """Keys of the configurations waiting in the study's queue (their parameters are fixed, not yet set)."""
    from optuna.trial import TrialState

    keys = set()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            keys.add(TrialConfig.from_params(dict(trial.system_attrs.get("fixed_params", {}))).key())
        except (ValueError, TypeError):
            continue
    return keys


def replay(source: optuna.Study, target: optuna.Study) -> list[TrialConfig]:
    """Queue ``source``'s Pareto-front configurations in ``target`` (those it has not measured yet).

    Returns the configurations queued; ``qco-tune run`` or a worker on the target's GPU measures them.
    """
    check_comparable([source, target])
    measured = {row.config.key() for row in load_summary(target).rows if row.config is not None}
    measured |= _queued_keys(target)
    queued: list[TrialConfig] = []
    for row in load_summary(source).front:
        if row.config is None or row.config.key() in measured:
            continue
        trial = source.trials[row.number]
        target.enqueue_trial(dict(trial.params), user_attrs={REPLAYED_FROM_ATTR: f"{source.study_name}#{row.number}"})
        queued.append(row.config)
        measured.add(row.config.key())
    return queued


def comparison_json(studies: list[optuna.Study]) -> dict[str, Any]:
    """``compare --format json``: each study's overview (``study_overview``, as ``list`` gives it) and every
    configuration with the trial that stands for it in each study, in the order of ``studies`` (the first
    is the reference of the speed-ups)."""
    from qco_tune.loop.summary import study_overview

    comparison = load_comparison(studies)
    names = comparison.studies
    return {
        "reference": names[0],
        "studies": [study_overview(s, summary) for s, summary in zip(studies, comparison.summaries, strict=True)],
        "median_speedups": {names[i]: comparison.median_speedup(i) for i in range(1, len(names))},
        "configurations": [
            {
                "configuration": item.config.describe(),
                "config": item.config.to_dict(),
                "baseline": item.baseline,
                "measured_everywhere": item.measured_everywhere,
                "results": [
                    {
                        "study": name,
                        "trial": row.number if row is not None else None,
                        "category": row.category if row is not None else None,
                        "latency_s": item.latency(i),
                        "memory_bytes": item.memory(i),
                        "on_front": item.on_front(i),
                        "speedup": item.speedup(i) if i else None,
                    }
                    for i, (name, row) in enumerate(zip(names, item.rows, strict=True))
                ],
            }
            for item in comparison.configs
        ],
    }
