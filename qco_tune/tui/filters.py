"""The trials filter of the study screen: a line of words, parsed once, applied to rows. Headless.

Words (all must match):

* ``state:front`` (or just ``front``): a category: front, dominated, feasible, infeasible, failed,
  skipped, running, waiting; several separated by commas: ``state:failed,infeasible``;
* ``knob=value``: a knob of the configuration as ``TrialConfig.to_params`` names it
  (``compile=regional``, ``offload=group_leaf``, ``transformer=bnb_nf4``); ``quant=bnb_nf4``
  matches any component; ``recipe=NAME`` a seeded recipe; ``!=`` negates;
* any other word: found in the configuration's summary or the recipe name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qco_tune.core.config import SETTINGS_DEFAULTS
from qco_tune.search.pareto import TrialRow

STATES = ("front", "dominated", "feasible", "infeasible", "failed", "skipped", "running", "waiting")
STATE_CYCLE = ("", "feasible", "front", "infeasible", "failed", "skipped", "running")
"""What the "cycle state" key steps through ("" = every state)."""


def knobs_of(row: TrialRow) -> dict[str, str]:
    """Knob name → value text of a row (``quant`` lists every quantized component's backend)."""
    knobs: dict[str, str] = {}
    if row.config is not None:
        params = {**SETTINGS_DEFAULTS, **row.config.to_params()}  # settings at their defaults match too
        for key, value in params.items():
            knobs[key.removeprefix("quant.")] = str(value).lower()
        knobs["quant"] = ",".join(b for _, b in row.config.quantization) or "none"
    knobs["recipe"] = (row.baseline or "").lower()
    return knobs


def _states(text: str) -> frozenset[str]:
    states: set[str] = set()
    for word in text.split(","):
        word = word.strip().lower()
        if word == "feasible":
            states |= {"front", "dominated"}
        elif word:
            states.add(word)
    return frozenset(states)


@dataclass(frozen=True)
class TrialFilter:
    """A parsed filter line; ``errors`` lists words that cannot match anything."""

    text: str = ""
    states: frozenset[str] = frozenset()
    knobs: tuple[tuple[str, str, bool], ...] = ()
    """(knob, value, negated)."""
    words: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> TrialFilter:
        states: set[str] = set()
        knobs: list[tuple[str, str, bool]] = []
        words: list[str] = []
        errors: list[str] = []
        for token in text.split():
            low = token.lower()
            if low.startswith("state:"):
                parsed = _states(low[6:])
                errors += [s for s in parsed if s not in STATES]
                states |= parsed
            elif low in STATES:
                states |= _states(low)
            elif "!=" in low:
                name, value = low.split("!=", 1)
                knobs.append((name, value, True))
            elif "=" in low:
                name, value = low.split("=", 1)
                knobs.append((name, value, False))
            else:
                words.append(low)
        return cls(text, frozenset(states), tuple(knobs), tuple(words), tuple(errors))

    @property
    def empty(self) -> bool:
        return not (self.states or self.knobs or self.words)

    def matches(self, row: TrialRow) -> bool:
        if self.states and row.category not in self.states:
            return False
        if not (self.knobs or self.words):
            return True
        knobs = knobs_of(row)
        for name, value, negated in self.knobs:
            have = knobs.get(name, "")
            hit = value in have.split(",") if name == "quant" else have == value
            if hit == negated:
                return False
        if self.words:
            text = ((row.config.describe() if row.config else "") + " " + (row.baseline or "")).lower()
            if not all(w in text for w in self.words):
                return False
        return True

    def with_state(self, state: str) -> TrialFilter:
        """The same filter with its state words replaced by ``state`` ("" = any state)."""
        kept = [t for t in self.text.split() if not t.lower().startswith("state:") and t.lower() not in STATES]
        return TrialFilter.parse(" ".join(([f"state:{state}"] if state else []) + kept))

    def next_state(self) -> TrialFilter:
        """Step the state filter through ``STATE_CYCLE``."""
        current = next((s for s in STATE_CYCLE if s and _states(s) == self.states), "" if not self.states else None)
        index = STATE_CYCLE.index(current) if current is not None else 0
        return self.with_state(STATE_CYCLE[(index + 1) % len(STATE_CYCLE)])
