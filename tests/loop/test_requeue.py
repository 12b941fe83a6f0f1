"""Interrupted trials go back to the queue, but not forever: after MAX_ATTEMPTS interrupted runs of one
configuration it counts as failed (a cold start longer than every run it is given must not loop)."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import ATTEMPT_ATTR, CONFIG_ATTR, STATUS_ATTR
from qco_tune.loop.context import MAX_ATTEMPTS
from qco_tune.loop.ledger import ledger, requeue

CONFIG = TrialConfig(compile="full")


def _interrupted(study: optuna.Study, attempt: int | None) -> int:
    attrs = {CONFIG_ATTR: CONFIG.to_dict(), STATUS_ATTR: "interrupted"}
    if attempt is not None:
        attrs[ATTEMPT_ATTR] = attempt
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"compile": "full"},
            distributions={"compile": CategoricalDistribution(["none", "regional", "full"])},
            user_attrs=attrs,
        )
    )
    return study.get_trials(deepcopy=False)[-1]._trial_id


def _waiting(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def test_an_interrupted_trial_is_queued_again_with_its_attempt_counted() -> None:
    study = optuna.create_study(directions=["minimize", "minimize"])
    requeue(study, _interrupted(study, None))
    (queued,) = _waiting(study)
    assert queued.system_attrs["fixed_params"] == {"compile": "full"} and queued.user_attrs[ATTEMPT_ATTR] == 2
    book = ledger(study)
    assert book.counted == 0 and CONFIG.key() not in book.keys  # handed back: not spent


def test_the_last_attempt_is_not_queued_again_and_counts_as_failed() -> None:
    study = optuna.create_study(directions=["minimize", "minimize"])
    requeue(study, _interrupted(study, MAX_ATTEMPTS))
    assert not _waiting(study)
    book = ledger(study)
    assert book.counted == 1 and book.keys[CONFIG.key()][1] == "failed"  # a new proposal of it is a repeat
