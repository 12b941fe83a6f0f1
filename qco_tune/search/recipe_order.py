"""When the guide's recipes are measured: the ones that keep every weight on the device first.

An offloading recipe is slower than the same recipe resident (it only adds transfers), so while a
resident recipe is predicted to fit the budget, measuring the offloading ones first spends the start
of a study (minutes each at full size: the FLUX.1-dev group-offload recipe took 286 s on an H200,
``studies/results/flux-dev-24gib/``) on configurations that cannot be the fastest feasible one. They
are held back until the plan has nothing else to propose, or until the trials left are just enough
for them. When no resident recipe fits, they are the study's feasible baselines and come first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qco_tune.core.config import TrialConfig

Recipe = tuple[str, TrialConfig]


def recipes_to_hold(recipes: Sequence[Recipe], fits: Callable[[TrialConfig], bool]) -> list[Recipe]:
    """The recipes a new study does not queue at once: the offloading ones, when a recipe that offloads
    nothing (the reference aside: it is measurement, not a candidate) is predicted to fit."""
    resident = [config for name, config in recipes[1:] if not config.is_offloaded]
    if not any(fits(config) for config in resident):
        return []
    return [(name, config) for name, config in recipes[1:] if config.is_offloaded]


def held_recipes_due(held: int, waiting: int, counted: int, target: int | None) -> bool:
    """Whether the held recipes are queued now: nothing else is queued (the plan has nothing left), or
    the trials left before ``target`` are just enough for them and what is queued."""
    if held == 0:
        return False
    return waiting == 0 or (target is not None and counted + waiting + held >= target)
