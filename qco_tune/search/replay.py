"""Enumerating a space by replay: a fake trial that answers every path of choices in turn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from qco_tune.core.config import TrialConfig


class TrialLike(Protocol):
    """The part of ``optuna.trial.Trial`` the space uses."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


# -- enumeration by replay ---------------------------------------------------------------------------------


def walk_configs(decide: Callable[[TrialLike], TrialConfig]) -> list[TrialConfig]:
    """Every result of ``decide`` over all paths of choices, depth first, in the order of the choices."""
    results = []
    stack: list[tuple[int, ...]] = [()]
    while stack:
        path = stack.pop()
        replay = _Replay(path)
        results.append(decide(replay))
        for depth in range(len(path), len(replay.sizes)):  # the deepest on top: lexicographic order
            for alternative in range(replay.sizes[depth] - 1, 0, -1):
                stack.append((*replay.taken[:depth], alternative))
    return results


class _Replay:
    """A trial that answers with the choice indices of ``path``, then the first choice, recording each decision."""

    def __init__(self, path: tuple[int, ...]) -> None:
        self._path = path
        self.taken: list[int] = []
        self.sizes: list[int] = []

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        depth = len(self.taken)
        index = self._path[depth] if depth < len(self._path) else 0
        self.taken.append(index)
        self.sizes.append(len(choices))
        return choices[index]
