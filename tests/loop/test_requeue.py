"""Interrupted trials go back to the queue, but not forever: after MAX_ATTEMPTS interrupted runs of one
configuration it counts as failed (a cold start longer than every run it is given must not loop)."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import ATTEMPT_ATTR, CONFIG_ATTR, STATUS_ATTR
from qco_tune.loop.context import MAX_ATTEMPTS
from qco_tune.loop.ledger import complete_queued, ledger, requeue

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


# Trial #18 of studies/results/flux-dev-24gib/study.db as queued there by the version before the fast-path
# and placement knobs: its parameters have none of them.
QUEUED_BEFORE_THE_FAST_PATH = {
    "quant.transformer": "torchao_fp8dq",
    "quant.text_encoder_2": "bnb_nf4",
    "compile": "full",
    "compile_mode": "default",
    "fullgraph": False,
    "offload": "none",
    "layerwise_casting": "none",
    "attention_backend": "native",
    "vae_tiling": False,
    "vae_channels_last": False,
}


def test_a_trial_queued_by_an_older_version_runs_with_the_new_knobs_at_their_defaults() -> None:
    from pathlib import Path

    from fake_machines import H200

    from qco_tune.core.presets import get_preset
    from qco_tune.core.spec import load_spec
    from qco_tune.search.space import SearchSpace

    spec = load_spec(Path(__file__).resolve().parents[2] / "studies" / "flux-dev-24gib.toml")
    space = SearchSpace.build(spec, get_preset(spec.model).model_info(), H200)
    new_knobs = {"fuse_qkv", "denoiser_channels_last", "inductor_profile", "place.text_encoder"}
    assert new_knobs <= set(space.params(TrialConfig())), "the space searches the knobs this test is about"
    # Without the completion the sampler picks the missing knobs (with this seed: not their defaults).
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    study.enqueue_trial(QUEUED_BEFORE_THE_FAST_PATH)

    assert complete_queued(study, space) == 1
    assert complete_queued(study, space) == 0  # already whole
    (queued,) = _waiting(study)
    assert new_knobs <= set(queued.system_attrs["fixed_params"])
    config = space.suggest(study.ask())
    assert config == TrialConfig.from_params(QUEUED_BEFORE_THE_FAST_PATH)
    assert not config.fuse_qkv and not config.denoiser_channels_last and config.inductor_profile == "default"
    assert dict(config.placement) in ({}, {"text_encoder": "resident", "text_encoder_2": "resident"})
