"""One source of availability: what the space leaves out on a machine is exactly what the rules of the needs
refuse there (``availability.NEEDS``), with the same reasons where one value is refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fake_machines import A100, CPU, H100

from qco_tune.core.config import SETTINGS_DEFAULTS, TrialConfig
from qco_tune.core.records import ModelInfo
from qco_tune.core.spec import parse_spec
from qco_tune.search.availability import NEEDS, STREAM_KNOBS
from qco_tune.search.rules import RULES
from qco_tune.search.space import SearchSpace

EVERY_KNOB = '[space]\nquantize_components = ["transformer", "text_encoder_2"]\nvae_slicing = [false, true]\n'
MACHINES = {
    "h100": H100,
    "a100": A100,
    "cpu": CPU,
    "cpu without compile or libraries": dataclasses.replace(CPU, compile=False, backends=()),
    "turing without quanto": dataclasses.replace(H100, compute_capability=(7, 5), backends=("bitsandbytes", "torchao")),
    "h100 with unusable parts": dataclasses.replace(
        H100, unusable=(("quanto_fp8", "RuntimeError: no kernel"), ("attention_backend=flash", "no"))
    ),
}
NEED_RULES = {need.name for need in NEEDS}


def _using(knob: str, value: Any) -> TrialConfig:
    """The simplest configuration in which ``knob = value`` means something."""
    if knob.startswith("quant."):
        return TrialConfig(quantization=((knob.removeprefix("quant."), value),))
    if knob.startswith("place."):
        return TrialConfig(placement=((knob.removeprefix("place."), value),))
    carrier: dict[str, Any] = {
        "compile_mode": {"compile": "full"},
        "fullgraph": {"compile": "full"},
        "inductor_profile": {"compile": "full"},
        "blocks_per_group": {"offload": "group_block"},
        **{k: {"offload": "group_leaf", "use_stream": True} for k in STREAM_KNOBS},
    }.get(knob, {})
    return TrialConfig(**{**carrier, knob: value})


def _refused_by_needs(space: SearchSpace, config: TrialConfig) -> list[str]:
    return [rule.reason(config, space) for rule in RULES if rule.name in NEED_RULES and rule.broken(config, space)]


def _is_default(knob: str, value: Any) -> bool:
    default = getattr(TrialConfig(), knob, None)
    return value == default or value in ("none", "resident") or value == SETTINGS_DEFAULTS.get(knob)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("machine", list(MACHINES))
def test_what_the_space_leaves_out_the_rules_of_the_needs_refuse(flux: ModelInfo, machine: str, dtype: str) -> None:
    spec = parse_spec(f'model = "flux.1-dev"\ndtype = "{dtype}"\n{EVERY_KNOB}tf32 = [false, true]\n')
    everywhere = SearchSpace.build(spec, flux, dataclasses.replace(H100, attention_backends=("native", "flash")))
    here = SearchSpace.build(spec, flux, MACHINES[machine])
    offered = here.knobs()
    checked = 0
    for knob, values in everywhere.knobs().items():
        for value in values:
            if _is_default(knob, value):
                continue
            config = _using(knob, value)
            refused = _refused_by_needs(here, config)
            assert bool(refused) == (value not in offered.get(knob, ())), (knob, value, refused)
            checked += 1
    assert checked > 20


def test_every_need_but_the_streams_has_its_rule_and_the_streams_are_refused_first(flux: ModelInfo) -> None:
    rules = {rule.name: rule for rule in RULES}
    assert {need.name for need in NEEDS if need.ruled} <= set(rules)
    unruled = [need for need in NEEDS if not need.ruled]
    assert [need.knobs for need in unruled] == [STREAM_KNOBS]
    space = SearchSpace.build(parse_spec('model = "flux.1-dev"\n'), flux, CPU)
    config = TrialConfig(offload="group_leaf", use_stream=True, non_blocking=True)
    assert rules["offload_needs_cuda"].broken(config, space)


def test_a_backend_refused_for_two_reasons_is_refused_by_both_rules(flux: ModelInfo) -> None:
    # bitsandbytes on a CPU machine where it is not installed either: the space gives the first reason,
    # a configuration that uses it (from another machine's space) breaks both rules.
    spec = parse_spec('model = "flux.1-dev"\n')
    cpu = SearchSpace.build(spec, flux, dataclasses.replace(CPU, backends=()))
    assert dict(cpu.missing())["bnb_nf4"] == "bitsandbytes needs a CUDA GPU"
    reasons = cpu.violations(TrialConfig(quantization=(("transformer", "bnb_nf4"), ("text_encoder_2", "quanto_int8"))))
    assert "bitsandbytes quantization needs a CUDA GPU" in reasons
    assert "bitsandbytes, quanto is not installed (or does not work) here" in reasons
