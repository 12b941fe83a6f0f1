"""The fast-path knobs (fused QKV projections, channels-last denoiser, Inductor profile) in the core: stored
form, availability per model and machine, the rules, the memory model, the calls and the export plan."""

from __future__ import annotations

import dataclasses

import pytest
from fake_machines import CPU, H100

from qco_tune.calls.dynamo import INDUCTOR_PROFILES, inductor_settings
from qco_tune.calls.settings import pipeline_settings
from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import ModelInfo
from qco_tune.core.spec import SpecError, parse_spec
from qco_tune.core.studyspec import StudySpec, Workload
from qco_tune.export.plan import plan_export
from qco_tune.search.memory import FUSED_QKV_SHARE, predict
from qco_tune.search.space import SearchSpace

FAST = TrialConfig(fuse_qkv=True, denoiser_channels_last=True, inductor_profile="flux-fast", compile="regional")


def _flux() -> ModelInfo:
    return get_preset("flux.1-dev").model_info()


def _spec(extra: str = "") -> StudySpec:
    return parse_spec('model = "flux.1-dev"\n[space]\nquantize_components = ["transformer"]\n' + extra)


def test_round_trip_and_defaults_leave_old_keys_unchanged() -> None:
    assert TrialConfig.from_dict(FAST.to_dict()) == FAST
    assert TrialConfig.from_params(FAST.to_params()) == FAST
    assert "fuse_qkv" not in TrialConfig().to_dict() and TrialConfig().key() == "compile=none;offload=none"
    # The profile means nothing uncompiled: canonical drops it, so it keys as the plain configuration.
    assert TrialConfig(inductor_profile="flux-fast").key() == TrialConfig().key()
    with pytest.raises(ValueError, match="inductor_profile must be one of default, flux-fast"):
        TrialConfig(inductor_profile="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fuse_qkv must be true or false"):
        TrialConfig(fuse_qkv="yes")  # type: ignore[arg-type]


def test_the_knobs_are_searched_where_they_run() -> None:
    knobs = SearchSpace.build(_spec(), _flux(), H100).knobs()
    assert knobs["fuse_qkv"] == knobs["denoiser_channels_last"] == (False, True)
    assert knobs["inductor_profile"] == ("default", "flux-fast")
    on_cpu = SearchSpace.build(_spec(), _flux(), CPU)
    assert "inductor_profile" not in on_cpu.knobs()
    assert dict(on_cpu.missing())["inductor_profile"].startswith("the Inductor profile tunes the Triton kernels")
    uncompiled = SearchSpace.build(_spec('compile = ["none"]\n'), _flux(), H100)
    assert "inductor_profile" not in uncompiled.knobs()


def test_a_denoiser_without_the_trait_loses_the_knob_with_the_reason() -> None:
    lacking = _flux().with_traits({"transformer": ("repeated_blocks", "attention_dispatch")})
    space = SearchSpace.build(_spec(), lacking, H100)
    assert "fuse_qkv" not in space.knobs()
    assert dict(space.missing())["fuse_qkv"] == (
        "FluxTransformer2DModel does not implement fuse_qkv_projections (no fused to_qkv / to_kv projections)"
    )
    assert any("does not implement fuse_qkv_projections" in v for v in space.violations(TrialConfig(fuse_qkv=True)))
    # Wan's transformer patch-embeds with a Conv3d: channels-last refuses its 5D weights (uninspected preset too).
    wan = get_preset("wan2.1-t2v-1.3b").model_info()
    for model in (wan, wan.with_traits({"transformer": ("repeated_blocks", "conv3d")})):
        missing = dict(SearchSpace.build(parse_spec('model = "wan2.1-t2v-1.3b"'), model, H100).missing())
        assert missing["denoiser_channels_last"] == (
            "WanTransformer3DModel has 3D convolution (5D) weights, which to(memory_format=torch.channels_last) refuses"
        )


def test_the_rules_of_the_fast_path() -> None:
    space = SearchSpace.build(_spec(), _flux(), H100)
    assert space.violations(FAST) == []
    quantized = dataclasses.replace(FAST, quantization=(("transformer", "bnb_nf4"),))
    (reason,) = space.violations(quantized)
    assert reason == (
        "fused QKV projections concatenate the unquantized weights, and transformer is bnb_nf4: bitsandbytes packs "
        "its weights, and fusing would build an nn.Linear of the packed bytes"
    )
    (reason,) = space.violations(TrialConfig(inductor_profile="flux-fast"))
    assert reason == "the Inductor profile flux-fast sets flags of the compiler, and compile is none"
    configs = SearchSpace.build(
        _spec('quantization = ["none", "bnb_nf4"]\ncompile = ["none", "full"]\n'), _flux(), H100
    )
    enumerated = configs.enumerate()
    assert not any(c.fuse_qkv and c.quantization for c in enumerated)
    assert not any(c.inductor_profile != "default" and c.compile == "none" for c in enumerated)
    assert any(c.fuse_qkv and c.inductor_profile == "flux-fast" for c in enumerated)


def test_fused_projections_add_their_copy_to_the_prediction() -> None:
    spec, flux = _spec(), _flux()
    plain = predict(flux, TrialConfig(), spec, H100).device_terms
    fused = predict(flux, TrialConfig(fuse_qkv=True), spec, H100).device_terms
    assert plain is not None and fused is not None
    transformer = (flux.component("transformer").params or 0) * 2
    assert fused.weights - plain.weights == pytest.approx(transformer * FUSED_QKV_SHARE)
    # Channels-last and the Inductor profile change no memory the model knows of.
    other = predict(flux, dataclasses.replace(FAST, fuse_qkv=False), spec, H100).device_terms
    assert other is not None and other.weights == plain.weights


def test_the_calls_and_the_export_plan() -> None:
    calls = [(c.target, c.method) for c in pipeline_settings(FAST, "bfloat16", "transformer")]
    assert calls[:2] == [("denoiser", "fuse_qkv_projections"), ("denoiser", "to")]
    with_casting = dataclasses.replace(FAST, layerwise_casting="float8_e4m3fn")
    methods = [c.method for c in pipeline_settings(with_casting, "bfloat16", "transformer")]
    assert methods.index("fuse_qkv_projections") < methods.index("enable_layerwise_casting")  # casting sees to_qkv
    assert (
        inductor_settings(FAST)
        == INDUCTOR_PROFILES["flux-fast"]
        == {
            "conv_1x1_as_mm": True,
            "coordinate_descent_tuning": True,
            "coordinate_descent_check_all_directions": True,
            "epilogue_fusion": False,
        }
    )
    assert inductor_settings(dataclasses.replace(FAST, compile="none")) == {}
    plan = plan_export(FAST, model=_flux(), workload=Workload())
    assert dict(plan.inductor) == INDUCTOR_PROFILES["flux-fast"]


def test_a_bad_profile_in_a_spec_is_a_one_line_error() -> None:
    with pytest.raises(SpecError, match="inductor_profiles"):
        parse_spec('model = "flux.1-dev"\n[space]\ninductor_profiles = ["turbo"]\n')
