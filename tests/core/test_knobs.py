"""The wider surface: the new quantization backends and the settings knobs (layerwise casting, attention
backend, VAE tiling, slicing and channels-last, TF32) in the configuration, the spec, the space and the
memory model; and that configurations and studies stored before these knobs existed read back unchanged."""

from __future__ import annotations

import dataclasses
import json

import pytest
from fake_machines import A100, CPU, H100
from fakes import FakeTrial

from qco_tune.core.config import SETTINGS_DEFAULTS, TrialConfig
from qco_tune.core.records import Capabilities, ComponentInfo, ModelInfo
from qco_tune.core.spec import SpecError, apply_overrides, parse_spec, spec_from_dict
from qco_tune.core.studyspec import StudySpec, dict_differences, identity_of, spec_to_dict
from qco_tune.search.memory import predict
from qco_tune.search.space import SearchSpace

GIB = 2**30
NEW_BACKENDS = ("torchao_int4wo", "torchao_fp8wo", "torchao_int8dq", "quanto_int4", "quanto_fp8")
EVERY_SETTING = TrialConfig(
    layerwise_casting="float8_e4m3fn",
    attention_backend="flash",
    vae_tiling=True,
    vae_slicing=True,
    vae_channels_last=True,
    tf32=True,
    fuse_qkv=True,
    denoiser_channels_last=True,
    inductor_profile="flux-fast",
)
TURING = dataclasses.replace(A100, gpu_name="Tesla T4", compute_capability=(7, 5))


def flux_spec(extra: str = "", dtype: str = "bfloat16") -> StudySpec:
    return parse_spec(
        f'model = "flux.1-dev"\ndtype = "{dtype}"\n[space]\nquantize_components = ["transformer"]\n' + extra
    )


# -- the configuration --------------------------------------------------------------------------------------


# What qco-tune wrote before the settings knobs existed (its to_dict and key of this configuration).
OLD_STORED = {
    "quantization": {"transformer": "bnb_nf4", "text_encoder_2": "bnb_nf4"},
    "compile": "full",
    "compile_mode": "max-autotune",
    "fullgraph": True,
    "offload": "none",
    "blocks_per_group": 1,
    "use_stream": False,
    "non_blocking": False,
    "record_stream": False,
    "low_cpu_mem_usage": False,
    "version": 1,
}
OLD_KEY = (
    "compile=full;compile_mode=max-autotune;fullgraph=True;offload=none;"
    "quant.text_encoder_2=bnb_nf4;quant.transformer=bnb_nf4"
)


def test_a_configuration_stored_before_the_new_knobs_reads_back_unchanged() -> None:
    config = TrialConfig.from_dict(OLD_STORED)
    assert config.settings() == {} and config.attention_backend == "native" and not config.vae_tiling
    assert config.to_dict() == OLD_STORED  # written back exactly as stored: no new keys at their defaults
    assert config.key() == OLD_KEY  # so de-duplication against old trials still matches
    assert "attention" not in config.describe() and "vae" not in config.describe()


def test_settings_round_trip_through_dict_params_and_json() -> None:
    config = dataclasses.replace(EVERY_SETTING, quantization=(("text_encoder_2", "quanto_int4"),), compile="regional")
    data = config.to_dict()
    assert (
        {k: data[k] for k in SETTINGS_DEFAULTS}
        == config.settings()
        == {
            "layerwise_casting": "float8_e4m3fn",
            "attention_backend": "flash",
            "vae_tiling": True,
            "vae_slicing": True,
            "vae_channels_last": True,
            "tf32": True,
            "fuse_qkv": True,
            "denoiser_channels_last": True,
            "inductor_profile": "flux-fast",
        }
    )
    assert TrialConfig.from_dict(json.loads(json.dumps(data))) == config
    assert TrialConfig.from_params(config.to_params()) == config
    assert config.key() != TrialConfig(quantization=config.quantization, compile="regional").key()
    assert config.describe() == (
        "text_encoder_2:quanto_int4 · compile regional/default · attention flash · layerwise float8_e4m3fn · "
        "vae tiling+slicing+channels_last · tf32 · fused qkv · denoiser channels_last · inductor flux-fast"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"attention_backend": "flash_hub"}, "attention_backend must be one of native, _native_cudnn"),
        ({"layerwise_casting": "float8_e5m2"}, "layerwise_casting must be one of none, float8_e4m3fn"),
        ({"vae_tiling": "yes"}, "vae_tiling must be true or false, got 'yes'"),
        ({"quantization": {"transformer": "torchao_int2"}}, "unknown quantization backend 'torchao_int2'"),
    ],
)
def test_bad_values_are_refused_in_one_line(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        TrialConfig.from_dict(fields)
    assert "\n" not in str(info.value)


# -- the spec -------------------------------------------------------------------------------------------------


def test_every_new_space_field_parses_from_toml_and_from_flags() -> None:
    spec = flux_spec(
        'attention_backends = ["native", "flash"]\nlayerwise_casting = ["none"]\nvae_tiling = [true]\n'
        "vae_slicing = [false, true]\nvae_channels_last = [false]\ntf32 = [true, false]\n"
    )
    space = spec.space
    assert space.attention_backends == ("native", "flash") and space.layerwise_casting == ("none",)
    assert (space.vae_tiling, space.vae_slicing, space.vae_channels_last, space.tf32) == (
        (True,),
        (False, True),
        (False,),
        (True, False),
    )
    flagged = apply_overrides(
        flux_spec(),
        attention_backends="native,flash",
        layerwise_casting="none",
        vae_tiling="true",
        vae_slicing="false,true",
        vae_channels_last="false",
        tf32="true,false",
    )
    assert flagged.space == space
    assert spec_from_dict(spec_to_dict(spec)).space == space


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('attention_backends = ["flsh"]', "item 1: unknown value 'flsh' (did you mean 'flash'?)"),
        ('layerwise_casting = ["fp8"]', "item 1: unknown value 'fp8'"),
        ('vae_tiling = ["yes"]', "item 1: expected true or false, got a string 'yes'"),
        ("tf32 = true", "expected a list, got a boolean True"),
        ("vae_slicing = []", "must not be empty"),
    ],
)
def test_bad_space_fields_name_the_field_and_line(line: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(f'model = "flux.1-dev"\n[space]\n{line}\n', source="study.toml")
    field = line.split(" ", 1)[0]
    assert str(info.value).startswith(f"study.toml, line 3: space.{field}: ")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_bad_flag_names_the_flag() -> None:
    with pytest.raises(SpecError, match=r"^--attention-backends: item 2: unknown value 'sdpa'"):
        apply_overrides(flux_spec(), attention_backends="native,sdpa")


def test_a_study_stored_before_the_new_fields_keeps_its_identity() -> None:
    spec = flux_spec('compile = ["none", "regional"]\n')
    stored = spec_to_dict(spec)
    for name in ("attention_backends", "layerwise_casting", "vae_tiling", "vae_slicing", "vae_channels_last", "tf32"):
        del stored["space"][name]  # as an older qco-tune stored it
    assert dict_differences(identity_of(stored), spec.identity()) == []
    assert spec_from_dict(stored) == spec
    restricted = flux_spec('compile = ["none", "regional"]\nvae_tiling = [false]\n')
    assert dict_differences(identity_of(stored), restricted.identity()) == ["space.vae_tiling: None → [False]"]


# -- the space --------------------------------------------------------------------------------------------------


def test_the_new_backends_are_offered_to_every_quantized_component(flux: ModelInfo) -> None:
    spec = parse_spec('model = "flux.1-dev"\n')
    knobs = SearchSpace.build(spec, flux, H100).knobs()
    for component in ("transformer", "text_encoder", "text_encoder_2"):
        assert set(NEW_BACKENDS) <= set(knobs[f"quant.{component}"])


def test_settings_knobs_on_an_h100_and_what_a_bfloat16_study_leaves_out(flux: ModelInfo) -> None:
    space = SearchSpace.build(flux_spec(), flux, H100)
    knobs = space.knobs()
    assert knobs["attention_backend"][0] == "native" and "sage" in knobs["attention_backend"]
    assert knobs["layerwise_casting"] == ("none", "float8_e4m3fn")
    assert knobs["vae_tiling"] == knobs["vae_channels_last"] == (False, True)
    assert "vae_slicing" not in knobs and "tf32" not in knobs
    missing = dict(space.missing())
    assert "a trial decodes one image per call" in missing["vae_slicing"]
    assert missing["tf32"] == "not searched: TF32 changes float32 matmuls only, and the study runs in bfloat16"
    listed = SearchSpace.build(flux_spec("vae_slicing = [false, true]\ntf32 = [false, true]\n"), flux, H100)
    assert listed.knobs()["vae_slicing"] == listed.knobs()["tf32"] == (False, True)


def test_a_float32_study_searches_tf32_and_drops_half_precision_attention(flux: ModelInfo) -> None:
    space = SearchSpace.build(flux_spec(dtype="float32"), flux, H100)
    assert space.knobs()["tf32"] == (False, True)
    assert space.knobs()["attention_backend"] == ("native", "_native_efficient", "xformers")
    missing = dict(space.missing())
    assert missing["attention_backend=flash"] == (
        "attention backend flash takes bfloat16 or float16 inputs only, and the study runs in float32"
    )
    assert "float32" in missing["torchao_int4wo"]  # tinygemm quantizes bfloat16 weights only
    assert space.violations(TrialConfig(attention_backend="sage")) == [
        "attention backend sage takes bfloat16 or float16 inputs only, and the study runs in float32"
    ]


def test_tf32_and_int4_need_an_ampere_gpu(flux: ModelInfo) -> None:
    space = SearchSpace.build(flux_spec(dtype="float32"), flux, TURING)
    missing = dict(space.missing())
    assert missing["tf32"] == "TF32 needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere); this one is 7.5"
    assert missing["torchao_int4wo"].endswith("compute capability 8.0 or newer; this one is 7.5")
    assert "tf32" not in space.knobs()


def test_attention_backends_are_what_the_probe_found(flux: ModelInfo) -> None:
    caps = dataclasses.replace(
        H100,
        attention_backends=("native", "_native_cudnn"),
        unusable=(("attention_backend=flash", "RuntimeError: Flash Attention backend 'flash' is not usable"),),
    )
    space = SearchSpace.build(flux_spec(), flux, caps)
    assert space.knobs()["attention_backend"] == ("native", "_native_cudnn")
    missing = dict(space.missing())
    assert missing["attention_backend=flash"] == (
        "attention backend flash: RuntimeError: Flash Attention backend 'flash' is not usable"
    )
    assert missing["attention_backend=sage"] == "attention backend sage was not found usable here"
    assert dict(SearchSpace.build(flux_spec(), flux, CPU).missing())["attention_backend=_native_cudnn"] == (
        "attention backend _native_cudnn needs a CUDA GPU (on the CPU only native attention runs)"
    )


def test_old_capabilities_offer_native_attention_only(flux: ModelInfo) -> None:
    """Capabilities stored by an older qco-tune have no attention probe: only native attention is offered."""
    old = Capabilities.from_dict(
        {k: v for k, v in H100.to_dict().items() if k not in ("attention_backends", "unusable")}
    )
    assert "attention_backend" not in SearchSpace.build(flux_spec(), flux, old).knobs()
    assert Capabilities.from_dict(json.loads(json.dumps(H100.to_dict()))) == H100


def _with_vae(model: ModelInfo, class_name: str | None) -> ModelInfo:
    components = tuple(c for c in model.components if c.role != "vae")
    if class_name is not None:
        components += (ComponentInfo("vae", "vae", class_name, 1000),)
    return dataclasses.replace(model, components=components)


def test_vae_knobs_follow_what_the_vae_supports(flux: ModelInfo) -> None:
    wan_like = SearchSpace.build(flux_spec(), _with_vae(flux, "AutoencoderKLWan"), H100)
    assert wan_like.knobs()["vae_tiling"] == (False, True)
    assert dict(wan_like.missing())["vae_channels_last"] == (
        "channels-last is a 2D memory format, and AutoencoderKLWan is not a 2D convolutional VAE"
    )
    odd = SearchSpace.build(flux_spec(), _with_vae(flux, "AutoencoderKLTemporalDecoder"), H100)
    assert dict(odd.missing())["vae_tiling"] == (
        "AutoencoderKLTemporalDecoder does not implement tiling (enable_tiling finds no use_tiling)"
    )
    none = SearchSpace.build(flux_spec(), _with_vae(flux, None), H100)
    assert not {"vae_tiling", "vae_slicing", "vae_channels_last"} & set(none.knobs())
    assert none.violations(TrialConfig(vae_tiling=True)) == ["flux.1-dev has no VAE"]


def test_a_setting_restricted_to_one_value_takes_it(flux: ModelInfo) -> None:
    space = SearchSpace.build(
        flux_spec('layerwise_casting = ["float8_e4m3fn"]\nattention_backends = ["sage"]\n'), flux, H100
    )
    assert space.knobs()["layerwise_casting"] == ("float8_e4m3fn",) and space.knobs()["attention_backend"] == ("sage",)
    config = space.suggest(FakeTrial())
    assert config.layerwise_casting == "float8_e4m3fn" and config.attention_backend == "sage"
    assert space.violations(config) == [] and not space.is_empty()
    nowhere = SearchSpace.build(flux_spec('attention_backends = ["sage"]\n'), flux, CPU)
    assert "attention_backend" not in nowhere.knobs() and nowhere.is_empty()  # study.prepare says why


def test_layerwise_casting_only_with_an_unquantized_denoiser(flux: ModelInfo) -> None:
    space = SearchSpace.build(flux_spec(), flux, H100)
    cast = TrialConfig(layerwise_casting="float8_e4m3fn")
    assert space.violations(cast) == []
    assert space.violations(dataclasses.replace(cast, quantization=(("transformer", "quanto_fp8"),)))
    te_only = parse_spec('model = "flux.1-dev"\n[space]\nquantize_components = ["text_encoder_2"]\n')
    te_space = SearchSpace.build(te_only, flux, H100)
    assert te_space.violations(dataclasses.replace(cast, quantization=(("text_encoder_2", "torchao_int4wo"),))) == []


def test_enqueued_configurations_pin_every_searched_setting(flux: ModelInfo) -> None:
    space = SearchSpace.build(flux_spec(), flux, H100)
    params = space.params(TrialConfig(vae_tiling=True))
    assert params["vae_tiling"] is True and params["attention_backend"] == "native"
    assert params["layerwise_casting"] == "none" and params["vae_channels_last"] is False
    assert TrialConfig.from_params(params) == TrialConfig(vae_tiling=True)


def test_the_full_space_is_walked_lazily(flux: ModelInfo) -> None:
    space = SearchSpace.build(parse_spec('model = "flux.1-dev"\n'), flux, H100)
    assert not space.is_empty()
    first = next(iter(space.iter_configs()))
    assert first == TrialConfig()
    for config in space.iter_configs(settings_key=lambda c: c.layerwise_casting):
        assert space.violations(config) == []
        break


# -- the memory model ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "per_param"),
    [
        ("torchao_int4wo", 0.56),
        ("quanto_int4", 0.56),
        ("torchao_fp8wo", 1.02),
        ("torchao_int8dq", 1.02),
        ("quanto_fp8", 1.02),
    ],
)
def test_bytes_per_parameter_of_the_new_backends(flux: ModelInfo, backend: str, per_param: float) -> None:
    spec = parse_spec('model = "flux.1-dev"\n[budget]\ncounts = "allocated"\n')
    plain = predict(flux, TrialConfig(), spec, H100).device_bytes or 0
    quantized = predict(flux, TrialConfig(quantization=(("transformer", backend),)), spec, H100).device_bytes or 0
    params = flux.component("transformer").params or 0
    assert plain - quantized == pytest.approx(params * (2 - per_param), rel=1e-6)


def test_layerwise_casting_counts_one_byte_per_denoiser_parameter(flux: ModelInfo) -> None:
    spec = parse_spec('model = "flux.1-dev"\n[budget]\ncounts = "allocated"\n')
    plain = predict(flux, TrialConfig(), spec, H100).device_bytes or 0
    cast = predict(flux, TrialConfig(layerwise_casting="float8_e4m3fn"), spec, H100).device_bytes or 0
    assert plain - cast == pytest.approx(flux.component("transformer").params or 0, rel=1e-6)
