"""How a trial's constraints are stored, so that every client of the storage reads them alike.

Optuna 5's ``Trial.set_constraint`` stores one system attribute ``constraints:NAME`` per constraint,
and ``study.best_trials`` (hence ``optuna best-trials``) reads those. optuna-dashboard (0.21) reads
only the older form, a list under ``constraints``, and without it shows every trial as feasible.
Both forms are written, with the same values; Optuna reads both (the list as keys ``0``, ``1``, ...)
and feasibility, all values <= 0, is the same either way. ``optuna trials`` shows no system attribute:
the user attribute ``qco.feasible`` says it there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qco_tune.core.keys import FEASIBLE_ATTR

if TYPE_CHECKING:
    import optuna

LIST_KEY = "constraints"
"""The system attribute optuna-dashboard reads (Optuna's own older form)."""


def constraint_system_attrs(constraints: Mapping[str, float]) -> dict[str, Any]:
    """The system attributes that record ``constraints``: one per name, and the list of values."""
    attrs: dict[str, Any] = {f"{LIST_KEY}:{name}": float(value) for name, value in constraints.items()}
    attrs[LIST_KEY] = [float(value) for value in constraints.values()]
    return attrs


def constraint_user_attrs(constraints: Mapping[str, float]) -> dict[str, Any]:
    """The user attribute that says the same for the clients that show no system attribute."""
    return {FEASIBLE_ATTR: all(float(value) <= 0 for value in constraints.values())}


def record_constraints(trial: optuna.Trial, constraints: Mapping[str, float]) -> None:
    """Record ``constraints`` on a running trial, before it is told."""
    for name, value in constraints.items():
        trial.set_constraint(name, value)
    for key, value in constraint_user_attrs(constraints).items():
        trial.set_user_attr(key, value)
    # Trial has no public setter for a system attribute: the storage's is the one Optuna itself uses.
    trial.storage.set_trial_system_attr(trial._trial_id, LIST_KEY, constraint_system_attrs(constraints)[LIST_KEY])


def named_constraints(system_attrs: Mapping[str, Any]) -> dict[str, float]:
    """A trial's constraints by name, from its system attributes: the ``constraints:NAME`` form where
    present, else the list (a study recorded by another tool), keyed ``0``, ``1``, ..."""
    prefix = LIST_KEY + ":"
    named = {k[len(prefix) :]: float(v) for k, v in system_attrs.items() if k.startswith(prefix)}
    if named:
        return named
    listed = system_attrs.get(LIST_KEY)
    return {str(i): float(v) for i, v in enumerate(listed)} if isinstance(listed, list) else {}
