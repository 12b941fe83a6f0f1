"""Stand-ins for the tests of the headless core: a fake Optuna trial (the machines: ``fake_machines``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class FakeTrial:
    """Answers ``suggest_categorical`` like an Optuna trial and records what was asked.

    Answers come from ``answers`` (parameter name → value), else from ``choose`` (name, choices) → value,
    else the first choice.
    """

    def __init__(
        self,
        answers: dict[str, Any] | None = None,
        choose: Callable[[str, Sequence[Any]], Any] | None = None,
    ) -> None:
        self.answers = answers or {}
        self.choose = choose
        self.asked: dict[str, tuple[Any, ...]] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        assert name not in self.asked, f"{name} suggested twice"
        self.asked[name] = tuple(choices)
        if name in self.answers:
            value = self.answers[name]
            assert value in choices, f"{name}={value!r} is not among {choices}"
            return value
        if self.choose is not None:
            return self.choose(name, choices)
        return choices[0]

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self.suggest_categorical(name, tuple(range(low, high + 1)))


class PathTrial(FakeTrial):
    """Answers with the choice indices of ``path``, then the first choice: for walking every path."""

    def __init__(self, path: tuple[int, ...]) -> None:
        super().__init__()
        self.path = path
        self.sizes: list[int] = []
        self.taken: list[int] = []

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        depth = len(self.taken)
        index = self.path[depth] if depth < len(self.path) else 0
        self.taken.append(index)
        self.sizes.append(len(choices))
        self.asked[name] = tuple(choices)
        return choices[index]


def every_suggestion(suggest: Callable[[FakeTrial], Any]) -> list[Any]:
    """``suggest`` run along every path of choices (brute force, no rules applied)."""
    results = []
    stack: list[tuple[int, ...]] = [()]
    while stack:
        path = stack.pop()
        trial = PathTrial(path)
        results.append(suggest(trial))
        for depth in range(len(path), len(trial.sizes)):
            stack.extend((*trial.taken[:depth], alt) for alt in range(1, trial.sizes[depth]))
    return results
