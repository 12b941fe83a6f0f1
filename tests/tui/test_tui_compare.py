"""Comparing studies: configurations matched by key, speed-ups, fronts (headless ``qco_tune.search.compare``)."""

from __future__ import annotations

from typing import Any

import pytest

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import CONFIG_ATTR, MEASUREMENT_ATTR, MEMORY_ATTR
from qco_tune.core.records import Measurement
from qco_tune.search.compare import compare_summaries
from qco_tune.search.pareto import summarize
from qco_tune.store.studydata import StoredTrial
from qco_tune.store.tables import open_reader

GIB = 2**30
BF16 = TrialConfig()
NF4 = TrialConfig(quantization=(("transformer", "bnb_nf4"),))
LEAF = TrialConfig(offload="group_leaf", use_stream=True)
# compile_mode means nothing without compile: canonically the same configuration as BF16
BF16_NOISE = TrialConfig(compile_mode="max-autotune")


def done(number: int, config: TrialConfig, latency: float, gib: float, budget: float = 16) -> StoredTrial:
    attrs: dict[str, Any] = {
        CONFIG_ATTR: config.to_dict(),
        MEASUREMENT_ATTR: Measurement(status="ok", latency_s=latency).to_dict(),
        MEMORY_ATTR: int(gib * GIB),
    }
    return StoredTrial(number, "COMPLETE", [latency, gib], attrs, constraints={"vram": gib - budget})


def failed(number: int, config: TrialConfig) -> StoredTrial:
    return StoredTrial(number, "FAIL", None, {CONFIG_ATTR: config.to_dict()})


def test_configurations_match_by_canonical_key() -> None:
    a = summarize([done(0, BF16, 4.0, 20), done(1, NF4, 5.0, 8), done(2, LEAF, 9.0, 2)], 16 * GIB)
    b = summarize([done(7, NF4, 2.5, 8), done(3, BF16_NOISE, 2.0, 20, budget=48), failed(4, LEAF)], 16 * GIB)
    comparison = compare_summaries([("h100", a), ("l40s", b)])
    assert comparison.studies == ("h100", "l40s")
    by_key = {c.key: c for c in comparison.configs}
    bf16 = by_key[BF16.key()]
    assert [r.number for r in bf16.rows if r] == [0, 3]
    assert bf16.speedup(1) == pytest.approx(2.0)
    assert not bf16.feasible(0) and bf16.on_front(1)
    nf4 = by_key[NF4.key()]
    assert nf4.speedup(1) == pytest.approx(2.0) and nf4.on_front(0)
    leaf = by_key[LEAF.key()]
    assert leaf.latency(1) is None and not leaf.measured_everywhere
    assert {c.key for c in comparison.matched} == {BF16.key(), NF4.key()}
    assert comparison.median_speedup(1) == pytest.approx(2.0)
    assert [c.key for c in comparison.front_only_in(0)] == [LEAF.key()]
    assert comparison.configs[-1].key == LEAF.key()  # not measured everywhere: last


def test_repeated_configuration_is_represented_by_its_best_trial() -> None:
    a = summarize([done(0, NF4, 6.0, 8), done(1, NF4, 5.0, 8)], 16 * GIB)
    b = summarize([done(0, NF4, 5.0, 8)], 16 * GIB)
    (only,) = compare_summaries([("a", a), ("b", b)]).configs
    assert only.rows[0] is not None and only.rows[0].number == 1


def test_needs_two_distinct_studies() -> None:
    s = summarize([], None)
    with pytest.raises(ValueError, match="two"):
        compare_summaries([("a", s)])
    with pytest.raises(ValueError, match="once"):
        compare_summaries([("a", s), ("a", s)])


def test_fake_studies_on_two_gpus(two_studies: str) -> None:
    reader = open_reader(two_studies)
    a, b = reader.load_study("flux-dev-16gib"), reader.load_study("flux-dev-16gib-l40s")
    comparison = compare_summaries([(a.name, a.summary), (b.name, b.summary)])
    baseline = next(c for c in comparison.configs if c.baseline == "reference")
    assert all(r is not None for r in baseline.rows)
    assert comparison.matched
