"""The guide's offloading recipes wait while a resident recipe fits; they still run within the target.

The trial runner here is a FAKE (no pipeline runs): memory is the memory model's prediction, latency a
made-up figure; only the order in which trials are asked is checked.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
from fake_machines import H200

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import BASELINE_ATTR
from qco_tune.core.presets import get_preset
from qco_tune.core.records import Measurement, TrialRequest
from qco_tune.core.spec import load_spec
from qco_tune.core.units import parse_size
from qco_tune.loop.context import RunResult, SilentObserver, StudyContext
from qco_tune.loop.setup import open_study
from qco_tune.loop.study import run_loop
from qco_tune.search import memory
from qco_tune.search.recipe_order import held_recipes_due, recipes_to_hold
from qco_tune.search.space import SearchSpace

SPEC = Path(__file__).resolve().parents[2] / "studies" / "flux-dev-24gib.toml"
OFFLOADING = ("quantization + compile + model offload", "quantization + group offload")


def _study(budget: str, trials: int) -> tuple[StudyContext, optuna.Study]:
    spec = dataclasses.replace(load_spec(SPEC), trials=trials, timeout=None, vram_budget=parse_size(budget))
    model = get_preset(spec.model).model_info()
    space = SearchSpace.build(spec, model, H200)

    def fake_execute(request: TrialRequest, timeout: float = 0.0, on_phase: object = None) -> Measurement:
        need = memory.predict(model, request.config, spec, H200).device_bytes
        latency = 6.0 / (2.0 if request.config.compile != "none" else 1.0)
        return Measurement(
            status="ok", device="cuda", latency_s=latency, step_time_s=latency / 30, first_call_s=latency * 3,
            peak_device_bytes=need, extra={"wall_s": 60.0},
        )  # fmt: skip

    study, _ = open_study(spec, optuna.storages.InMemoryStorage(), model, H200, space, seed=0)
    return StudyContext(spec, model, H200, space, study, SilentObserver(), {}, execute=fake_execute), study


def _asked(study: optuna.Study) -> list[str]:
    """Each trial in the order it was asked: its recipe name, or "searched"."""
    return [t.user_attrs.get(BASELINE_ATTR, "searched") for t in sorted(study.get_trials(), key=lambda t: t.number)]


def test_at_24_gib_the_offloading_recipes_run_after_the_search_and_before_the_target() -> None:
    ctx, study = _study("24GiB", trials=12)
    waiting = [t.user_attrs[BASELINE_ATTR] for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))]
    assert waiting == ["reference", "quantization", "quantization + compile"]  # the resident ones fit: first
    run_loop(ctx, RunResult(ctx.spec.name), should_stop=lambda: False)
    order = _asked(study)
    assert order[:3] == waiting and "searched" in order[3:5], order
    assert set(OFFLOADING) <= set(order), "held recipes still run within the target"
    first_held = min(order.index(name) for name in OFFLOADING)
    assert order[3:first_held].count("searched") >= 5, order


def test_when_no_resident_recipe_fits_the_offloading_recipes_come_first() -> None:
    _, study = _study("12GiB", trials=12)  # the NF4 recipes need about 16 GiB resident
    waiting = [t.user_attrs[BASELINE_ATTR] for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))]
    assert waiting == ["reference", "quantization", "quantization + compile", *OFFLOADING]


def test_only_offloading_recipes_are_held_and_only_while_a_resident_one_fits() -> None:
    resident, offloaded = TrialConfig(compile="full"), TrialConfig(offload="model")
    placed = TrialConfig(placement=(("text_encoder_2", "model"),))
    recipes = [("reference", TrialConfig()), ("r", resident), ("o", offloaded), ("p", placed)]
    assert recipes_to_hold(recipes, lambda c: True) == [("o", offloaded), ("p", placed)]
    assert recipes_to_hold(recipes, lambda c: c.is_offloaded) == []  # the reference does not count as fitting
    assert recipes_to_hold(recipes[:1] + recipes[2:], lambda c: True) == []


@pytest.mark.parametrize(
    ("held", "waiting", "counted", "target", "due"),
    [
        (0, 0, 0, 10, False),  # nothing held
        (2, 0, 3, 10, True),  # the plan queued nothing
        (2, 1, 3, 10, False),  # the plan has a proposal and there is room after it
        (2, 1, 7, 10, True),  # just enough trials left for the queued one and the held ones
        (2, 1, 3, None, False),  # no target: only when the plan is done
    ],
)
def test_held_recipes_are_due_when_the_plan_is_done_or_the_target_is_near(
    held: int, waiting: int, counted: int, target: int | None, due: bool
) -> None:
    assert held_recipes_due(held, waiting, counted, target) is due
