"""The search space: conditional knobs, static choices, the rules, machine-dependent shrinking, recipes."""

from __future__ import annotations

import dataclasses
import itertools
import random
import re

import pytest
from fake_machines import A100, CPU, H100
from fakes import FakeTrial, every_suggestion

from qco_tune.core.config import QuantBackend, TrialConfig
from qco_tune.core.modelref import resolve_model
from qco_tune.core.records import Capabilities, ModelInfo
from qco_tune.core.spec import apply_overrides, load_default_spec, parse_spec
from qco_tune.core.studyspec import StudySpec
from qco_tune.search.choices import SpaceError
from qco_tune.search.rules import RULES
from qco_tune.search.space import SearchSpace

BOOLS = (False, True)
NF4_PAIR: tuple[tuple[str, QuantBackend], ...] = (("text_encoder_2", "bnb_nf4"), ("transformer", "bnb_nf4"))
GUIDE_LABELS = [
    "reference",
    "quantization",
    "quantization + compile",
    "quantization + compile + model offload",
    "quantization + group offload",
]


def open_spec() -> StudySpec:
    """The default study with every knob open (the default leaves compilation out)."""
    return apply_overrides(load_default_spec(), compile="none,regional,full")


def flux_space(caps: Capabilities = H100, **overrides: object) -> SearchSpace:
    spec = apply_overrides(parse_spec('model = "flux.1-dev"\n'), **overrides)  # type: ignore[arg-type]
    return SearchSpace.build(spec, resolve_model("flux.1-dev", "random"), caps)


# -- suggesting ------------------------------------------------------------------------------------------


def test_suggest_asks_exactly_the_flat_parameter_names(tiny: ModelInfo) -> None:
    space = SearchSpace.build(open_spec(), tiny, H100)
    answers = {"quant.transformer": "bnb_nf4", "compile": "regional", "compile_mode": "max-autotune-no-cudagraphs"}
    trial = FakeTrial({**answers, "fullgraph": True, "offload": "group_leaf", "use_stream": True})
    config = space.suggest(trial)
    assert config.backend_for("transformer") == "bnb_nf4" and config.compile == "regional" and config.fullgraph
    assert set(config.to_params()) <= set(trial.asked)
    assert set(trial.asked) == set(space.params(config))
    assert set(trial.asked) == {
        "quant.transformer",
        "quant.text_encoder",
        "quant.text_encoder_2",
        "compile",
        "compile_mode",
        "fullgraph",
        "offload",
        "use_stream",
        "non_blocking",
        "record_stream",
        "low_cpu_mem_usage",
        "attention_backend",
        "layerwise_casting",
        "vae_tiling",
        "vae_channels_last",
        "fuse_qkv",
        "denoiser_channels_last",
        "inductor_profile",
    }


@pytest.mark.parametrize(
    ("answers", "asked", "not_asked"),
    [
        ({"offload": "none"}, set(), {"use_stream", "non_blocking", "record_stream", "blocks_per_group"}),
        ({"offload": "model"}, set(), {"use_stream", "non_blocking", "low_cpu_mem_usage", "blocks_per_group"}),
        ({"offload": "sequential"}, set(), {"use_stream", "non_blocking", "record_stream"}),
        (
            {"offload": "group_leaf", "use_stream": False},
            {"use_stream", "non_blocking"},
            {"record_stream", "low_cpu_mem_usage", "blocks_per_group"},
        ),
        (
            {"offload": "group_block", "use_stream": True},
            {"blocks_per_group", "use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage"},
            set(),
        ),
        ({"compile": "none"}, set(), {"compile_mode", "fullgraph"}),
        ({"compile": "full"}, {"compile_mode", "fullgraph"}, set()),
    ],
)
def test_conditional_knobs_are_asked_only_where_they_exist(
    tiny: ModelInfo, answers: dict[str, object], asked: set[str], not_asked: set[str]
) -> None:
    trial = FakeTrial(answers)
    SearchSpace.build(open_spec(), tiny, H100).suggest(trial)
    assert asked <= set(trial.asked)
    assert not (not_asked & set(trial.asked))


def test_choices_of_a_parameter_never_change(tiny: ModelInfo) -> None:
    space = SearchSpace.build(open_spec(), tiny, H100)
    rng = random.Random(0)
    seen: dict[str, tuple[object, ...]] = {}
    for _ in range(300):
        trial = FakeTrial(choose=lambda name, choices: rng.choice(list(choices)))
        space.suggest(trial)
        for name, choices in trial.asked.items():
            assert seen.setdefault(name, choices) == choices
            assert choices == space.knobs()[name]
    assert set(seen) == set(space.knobs())


def test_params_for_enqueueing_name_every_searched_component(tiny: ModelInfo) -> None:
    space = SearchSpace.build(open_spec(), tiny, H100)
    params = space.params(TrialConfig())
    assert params == {
        "quant.transformer": "none",
        "quant.text_encoder": "none",
        "quant.text_encoder_2": "none",
        "compile": "none",
        "offload": "none",
        "place.text_encoder": "resident",  # the text encoders may be released after use
        "place.text_encoder_2": "resident",
        "attention_backend": "native",  # the settings searched here, at their defaults
        "layerwise_casting": "none",
        "vae_tiling": False,
        "vae_channels_last": False,
        "fuse_qkv": False,
        "denoiser_channels_last": False,
        "inductor_profile": "default",
    }
    assert TrialConfig.from_params(params) == TrialConfig()


@pytest.mark.filterwarnings("ignore:.*experimental feature")
def test_suggest_with_a_real_optuna_study(tiny: ModelInfo) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.build(open_spec(), tiny, H100)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True))
    reference = TrialConfig()
    study.enqueue_trial(space.params(reference))
    for number in range(30):
        trial = study.ask()
        config = space.suggest(trial)
        if number == 0:
            assert config == reference  # an enqueued baseline comes back whole
        study.tell(trial, float(len(space.violations(config))))


# -- the rules -------------------------------------------------------------------------------------------

CASES: list[tuple[str, TrialConfig, Capabilities, str]] = [
    ("record_stream_without_stream", TrialConfig(offload="group_leaf", record_stream=True), H100, "use_stream"),
    (
        "low_cpu_mem_usage_without_stream",
        TrialConfig(offload="group_leaf", low_cpu_mem_usage=True),
        H100,
        "low_cpu_mem_usage only applies",
    ),
    (
        "group_knobs_without_group_offload",
        TrialConfig(offload="model", use_stream=True, non_blocking=True),
        H100,
        "use_stream, non_blocking only apply to group offloading, and offload is model",
    ),
    (
        "blocks_per_group_without_block_offload",
        TrialConfig(offload="group_leaf", blocks_per_group=2),
        H100,
        "blocks_per_group only applies to group_block",
    ),
    (
        "compile_knobs_without_compile",
        TrialConfig(compile_mode="max-autotune", fullgraph=True),
        H100,
        "only apply when compiling",
    ),
    (
        "cuda_graphs_with_offload",
        TrialConfig(compile="full", compile_mode="reduce-overhead", offload="model"),
        H100,
        "records CUDA graphs, which replay fixed device addresses",
    ),
    (
        "sequential_offload_with_bitsandbytes",
        TrialConfig(quantization=(("transformer", "bnb_nf4"),), offload="sequential"),
        H100,
        "sequential CPU offload cannot move bitsandbytes weights",
    ),
    (
        "group_offload_with_bitsandbytes_int8",
        TrialConfig(quantization=(("transformer", "bnb_int8"),), offload="group_leaf"),
        H100,
        "group offloading leaves bitsandbytes int8 state on the CPU (fails: expected a cuda device) without use_stream",
    ),
    (
        "group_offload_with_quanto",
        TrialConfig(quantization=(("transformer", "quanto_int8"),), offload="group_block"),
        H100,
        "group offloading does not onload quanto weights",
    ),
    (
        "fullgraph_with_group_offload",
        TrialConfig(compile="regional", fullgraph=True, offload="group_block"),
        H100,
        "fullgraph compilation cannot trace group offloading's onload hooks",
    ),
    (
        "sequential_offload_with_quanto",
        TrialConfig(quantization=(("transformer", "quanto_int8"),), offload="sequential"),
        H100,
        "sequential CPU offload cannot move quanto weights",
    ),
    (
        "fp8_needs_compute_capability",
        TrialConfig(quantization=(("transformer", "torchao_fp8dq"),)),
        A100,
        "compute capability 8.9 or newer (Ada, Hopper); this one is 8.0",
    ),
    (
        "bitsandbytes_needs_cuda",
        TrialConfig(quantization=(("transformer", "bnb_int8"),)),
        dataclasses.replace(CPU, backends=("bitsandbytes",)),
        "bitsandbytes quantization needs a CUDA GPU",
    ),
    ("offload_needs_cuda", TrialConfig(offload="model"), CPU, "offloading needs a CUDA GPU"),
    (
        "cuda_graphs_need_cuda",
        TrialConfig(compile="regional", compile_mode="max-autotune"),
        CPU,
        "compile mode max-autotune records CUDA graphs, which need a GPU",
    ),
    (
        "compile_unavailable",
        TrialConfig(compile="regional"),
        dataclasses.replace(CPU, compile=False),
        "torch.compile cannot build kernels",
    ),
    (
        "backend_not_installed",
        TrialConfig(quantization=(("transformer", "quanto_int8"),)),
        dataclasses.replace(H100, backends=("bitsandbytes", "torchao")),
        "quanto is not installed",
    ),
    (
        "component_not_in_model",
        TrialConfig(quantization=(("unet", "bnb_nf4"),)),
        H100,
        "flux.1-dev has no component unet (it has transformer, text_encoder, text_encoder_2, vae)",
    ),
    (
        "component_not_quantizable",
        TrialConfig(quantization=(("vae", "torchao_int8wo"),)),
        H100,
        "quantizing the VAE (vae) is not offered",
    ),
    (
        "quantization_outside_study_space",
        TrialConfig(quantization=(("text_encoder", "bnb_fp4"),)),
        H100,
        "outside the study's space: text_encoder is not among the quantized components",
    ),
    (
        "runtime_outside_study_space",
        TrialConfig(compile="full", compile_mode="reduce-overhead"),
        H100,
        "outside the study's space: compile_mode=reduce-overhead is not among default, max-autotune",
    ),
    (
        "torchao_int4_needs_tinygemm",
        TrialConfig(quantization=(("transformer", "torchao_int4wo"),)),
        CPU,
        "torchao int4 (tinygemm) needs a CUDA GPU of compute capability 8.0 or newer",
    ),
    (
        "backend_unusable_here",
        TrialConfig(quantization=(("text_encoder_2", "quanto_fp8"),)),
        dataclasses.replace(H100, unusable=(("quanto_fp8", "RuntimeError: no kernel"),)),
        "quanto_fp8: RuntimeError: no kernel",
    ),
    (
        "layerwise_casting_with_quantized_denoiser",
        TrialConfig(quantization=(("transformer", "torchao_int8wo"),), layerwise_casting="float8_e4m3fn"),
        H100,
        "layerwise casting stores the denoiser's weights in float8_e4m3fn itself, and transformer is already "
        "quantized (torchao_int8wo)",
    ),
    (
        "setting_unavailable",
        TrialConfig(attention_backend="flash"),
        dataclasses.replace(H100, attention_backends=("native",), unusable=(("attention_backend=flash", "no"),)),
        "attention backend flash: no",
    ),
    (
        "settings_outside_study_space",
        TrialConfig(vae_slicing=True),
        H100,
        "outside the study's space: vae_slicing=True is not among False",
    ),
    (
        "placement_component_not_in_model",
        TrialConfig(placement=(("unet", "model"),)),
        H100,
        "placement names unet, which flux.1-dev does not have (it has transformer, text_encoder, text_encoder_2, vae)",
    ),
    (
        "released_not_a_text_encoder",
        TrialConfig(placement=(("vae", "released"),)),
        H100,
        "released after use applies to text encoders",
    ),
    (
        "cpu_offload_beside_group_offload",
        TrialConfig(placement=(("transformer", "group_leaf"), ("text_encoder_2", "model"))),
        H100,
        "diffusers does not support model or sequential CPU offloading in a pipeline that contains components with "
        "group offloading enabled",
    ),
    (
        "fullgraph_with_offload_hook_on_denoiser",
        TrialConfig(compile="full", fullgraph=True, placement=(("text_encoder_2", "released"),)),
        H100,
        "cannot trace the hook on it that moves another component off the device",
    ),
    (
        "fused_qkv_with_quantized_denoiser",
        TrialConfig(quantization=(("transformer", "quanto_int8"),), fuse_qkv=True),
        H100,
        "fused QKV projections concatenate the unquantized weights, and transformer is quanto_int8: torch.cat of "
        "quanto's weights dequantizes them",
    ),
    (
        "inductor_profile_without_compile",
        TrialConfig(inductor_profile="flux-fast"),
        H100,
        "the Inductor profile flux-fast sets flags of the compiler, and compile is none",
    ),
]


@pytest.mark.parametrize(("rule_name", "config", "caps", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_every_rule_fires_with_its_reason(
    flux: ModelInfo, rule_name: str, config: TrialConfig, caps: Capabilities, fragment: str
) -> None:
    spec = parse_spec(
        'model = "flux.1-dev"\n[space]\nquantize_components = ["transformer", "text_encoder_2"]\n'
        'compile_modes = ["default", "max-autotune"]\n'
    )
    space = SearchSpace.build(spec, flux, caps)
    rule = next(r for r in RULES if r.name == rule_name)
    assert rule.broken(config, space)
    reasons = space.violations(config)
    assert rule.reason(config, space) in reasons
    assert any(fragment in reason for reason in reasons), reasons


def test_every_rule_has_a_case() -> None:
    assert {r.name for r in RULES} == {case[0] for case in CASES}
    assert len({r.name for r in RULES}) == len(RULES)


def test_outside_the_study_space_by_backend_and_offload() -> None:
    space = flux_space(quantization="none,bnb_nf4", offload="none,model")
    reasons = space.violations(TrialConfig(quantization=(("transformer", "torchao_int8wo"),), offload="group_leaf"))
    assert "outside the study's space: torchao_int8wo is not among the quantization backends" in reasons
    assert "outside the study's space: offload=group_leaf is not among none, model" in reasons


def test_valid_configurations_have_no_violations() -> None:
    space = flux_space()
    for config in (
        TrialConfig(),
        TrialConfig(quantization=NF4_PAIR, compile="full", compile_mode="max-autotune", fullgraph=True),
        TrialConfig(quantization=NF4_PAIR, offload="group_block", blocks_per_group=2, use_stream=True),
    ):
        assert space.violations(config) == []


def test_a_restriction_that_does_not_fit_the_model(flux: ModelInfo) -> None:
    with pytest.raises(SpaceError, match=re.escape("names 'unet', which flux.1-dev does not have")):
        SearchSpace.build(parse_spec('[space]\nquantize_components = ["unet"]\n'), flux, H100)
    with pytest.raises(SpaceError, match="quantizing the VAE"):
        SearchSpace.build(parse_spec('[space]\nquantize_components = ["vae"]\n'), flux, H100)


# -- the machine -------------------------------------------------------------------------------------------


def test_a_cpu_shrinks_the_space_and_says_why(tiny: ModelInfo) -> None:
    space = SearchSpace.build(open_spec(), tiny, CPU)
    knobs = space.knobs()
    assert knobs["quant.transformer"] == (
        "none",
        "torchao_int8wo",
        "quanto_int8",
        "torchao_fp8wo",
        "torchao_int8dq",
        "quanto_int4",
        "quanto_fp8",
    )
    assert knobs["offload"] == ("none",)
    assert knobs["layerwise_casting"] == ("none", "float8_e4m3fn") and knobs["vae_tiling"] == (False, True)
    assert "attention_backend" not in knobs and "tf32" not in knobs
    assert knobs["compile_mode"] == ("default", "max-autotune-no-cudagraphs")
    assert not {"use_stream", "blocks_per_group", "record_stream"} & set(knobs)
    missing = dict(space.missing())
    assert missing["bnb_nf4"] == "bitsandbytes needs a CUDA GPU"
    assert "compute capability 8.9" in missing["torchao_fp8dq"]
    assert missing["offload"] == "no CUDA: offloading to the CPU the trial already runs on means nothing"
    assert missing["use_stream"] == "CUDA streams need a GPU"
    assert "CUDA graphs need a GPU" in missing["max-autotune"]
    assert "torchao int4 (tinygemm) needs a CUDA GPU" in missing["torchao_int4wo"]
    assert missing["attention_backend=flash"].startswith("attention backend flash needs a CUDA GPU")


UNSEARCHED = ["vae_slicing", "tf32"]
"""Left out of a bfloat16 study by default (a trial decodes one image; TF32 changes float32 matmuls only)."""


def test_a_full_gpu_misses_nothing(tiny: ModelInfo) -> None:
    assert [k for k, _ in SearchSpace.build(open_spec(), tiny, H100).missing()] == UNSEARCHED


def test_an_ampere_gpu_lacks_fp8_only(tiny: ModelInfo) -> None:
    space = SearchSpace.build(open_spec(), tiny, A100)
    assert [k for k, _ in space.missing()] == ["torchao_fp8dq", *UNSEARCHED]
    assert "torchao_fp8dq" not in space.knobs()["quant.transformer"]
    assert "torchao_int4wo" in space.knobs()["quant.transformer"]  # tinygemm runs from compute capability 8.0


def test_no_compiler_and_no_quantization_library(tiny: ModelInfo) -> None:
    caps = Capabilities(cuda=False, backends=(), compile=False)
    space = SearchSpace.build(open_spec(), tiny, caps)
    assert space.components == ()  # nothing but "none" left: not searched
    assert space.knobs() == {
        "compile": ("none",),
        "offload": ("none",),
        "layerwise_casting": ("none", "float8_e4m3fn"),  # pure torch: they run anywhere
        "vae_tiling": BOOLS,
        "vae_channels_last": BOOLS,
        "fuse_qkv": BOOLS,
        "denoiser_channels_last": BOOLS,
    }
    assert dict(space.missing())["compile"].startswith("torch.compile cannot build kernels")
    assert dict(space.missing())["quanto_int8"] == "quanto is not installed (or does not work) here"
    assert TrialConfig() in space.enumerate() and len(space.enumerate()) == 2 * 2 * 2 * 2 * 2


def test_the_default_study_on_a_cpu(default_spec: StudySpec, tiny: ModelInfo) -> None:
    space = SearchSpace.build(default_spec, tiny, CPU)
    # Three components x seven backends (none, torchao int8 / float8 weight-only / int8 dynamic, quanto int8 /
    # int4 / float8), layerwise casting only with an unquantized transformer, fused QKV with an unquantized or
    # torchao one (quantized after fusing), VAE tiling, VAE channels-last, denoiser channels-last.
    torchao_transformer, quanto_transformer, plain_transformer = 3 * 7 * 7, 3 * 7 * 7, 7 * 7
    configs = 2 * torchao_transformer + quanto_transformer + 2 * 2 * plain_transformer
    assert len(space.enumerate()) == configs * 2 * 2 * 2
    assert "compile" not in dict(space.missing())  # left out by the study, not by the machine


# -- enumeration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("caps", [CPU, A100, H100], ids=["cpu", "a100", "h100"])
def test_enumerate_is_every_valid_suggestion_once(caps: Capabilities) -> None:
    space = flux_space(
        caps,
        quantization="none,bnb_nf4,quanto_int8,torchao_fp8dq",
        compile_modes="default,max-autotune",
        offload="none,sequential,group_leaf",
        attention_backends="native,flash",
        vae_channels_last="false",
    )
    configs = space.enumerate()
    keys = [c.key() for c in configs]
    assert len(keys) == len(set(keys))
    assert all(c == c.canonical() and space.violations(c) == [] for c in configs)
    brute = {c.key() for c in every_suggestion(space.suggest) if not space.violations(c)}
    assert set(keys) == brute


def test_enumerate_is_computed_once_and_copied() -> None:
    space = flux_space(offload="none", quantization="none,bnb_nf4")
    first = space.enumerate()
    first.clear()
    assert space.enumerate()


# -- the guide's recipes ------------------------------------------------------------------------------------


def test_baselines_on_a_gpu_are_the_guides_five_recipes() -> None:
    baselines = flux_space().baselines()
    assert [label for label, _ in baselines] == GUIDE_LABELS
    configs = dict(baselines)
    assert configs["reference"] == TrialConfig()
    assert configs["quantization"] == TrialConfig(quantization=NF4_PAIR)
    assert configs["quantization + compile"] == TrialConfig(
        quantization=NF4_PAIR, compile="full", compile_mode="max-autotune", fullgraph=True
    )
    assert configs["quantization + compile + model offload"] == TrialConfig(
        quantization=NF4_PAIR, compile="full", offload="model"
    )
    assert configs["quantization + group offload"] == TrialConfig(
        quantization=NF4_PAIR, compile="full", offload="group_leaf", use_stream=True, non_blocking=True
    )


def test_baselines_quantize_the_largest_text_encoder(tiny: ModelInfo) -> None:
    wan = resolve_model("wan2.1-t2v-1.3b", "random")
    _, config = SearchSpace.build(parse_spec('model = "wan2.1-t2v-1.3b"'), wan, H100).baselines()[1]
    assert config.quant_map == {"transformer": "bnb_nf4", "text_encoder": "bnb_nf4"}
    _, config = SearchSpace.build(open_spec(), tiny, H100).baselines()[1]
    assert config.quant_map == {"transformer": "bnb_nf4", "text_encoder_2": "bnb_nf4"}


def test_baselines_on_a_cpu_fall_back_and_say_so() -> None:
    assert [label for label, _ in flux_space(CPU).baselines()] == ["reference", "quantization (torchao_int8wo)"]
    no_torchao = dataclasses.replace(CPU, backends=("quanto",))
    labels = [label for label, _ in flux_space(no_torchao).baselines()]
    assert labels == ["reference", "quantization (quanto_int8)"]
    assert [label for label, _ in flux_space(dataclasses.replace(CPU, backends=())).baselines()] == ["reference"]


def test_baselines_outside_the_study_are_dropped_not_changed() -> None:
    labels = [label for label, _ in flux_space(compile="none,regional").baselines()]
    assert labels == ["reference", "quantization"]
    labels = [label for label, _ in flux_space(offload="none", compile_modes="default").baselines()]
    assert labels == ["reference", "quantization"]
    labels = [label for label, _ in flux_space(quantize_components="text_encoder_2").baselines()]
    assert labels == ["reference"]


def test_baselines_are_valid_and_distinct(default_spec: StudySpec, tiny: ModelInfo) -> None:
    for caps in (CPU, A100, H100):
        space = SearchSpace.build(open_spec(), tiny, caps)
        baselines = space.baselines()
        assert baselines[0] == ("reference", TrialConfig())
        assert all(space.violations(config) == [] for _, config in baselines)
        assert len({config.key() for _, config in baselines}) == len(baselines)


def test_bitsandbytes_int8_under_group_offloading_only_where_it_was_observed_to_run() -> None:
    """studies/results/rules_probe/: with a stream it ran at leaf level, and at block level for T5 alone."""
    space = flux_space()
    rule = next(r for r in RULES if r.name == "group_offload_with_bitsandbytes_int8")
    t5, dit = ("text_encoder_2", "bnb_int8"), ("transformer", "bnb_int8")
    ran = [
        TrialConfig(quantization=(dit,), offload="group_leaf", use_stream=True),
        TrialConfig(quantization=(t5, dit), offload="group_leaf", use_stream=True),
        TrialConfig(quantization=(t5,), offload="group_block", use_stream=True, low_cpu_mem_usage=True),
    ]
    failed = [
        TrialConfig(quantization=(t5, dit), offload="group_block", use_stream=True),
        TrialConfig(quantization=(dit,), offload="group_block", use_stream=True, low_cpu_mem_usage=True),
        TrialConfig(quantization=(t5, dit), offload="group_block"),
        TrialConfig(quantization=(t5,), offload="group_leaf"),
    ]
    assert [rule.broken(c, space) for c in ran] == [False] * len(ran)
    assert [rule.broken(c, space) for c in failed] == [True] * len(failed)
    assert "at block level with an int8 denoiser" in rule.reason(failed[0], space)


# -- placement per component ---------------------------------------------------------------------------------


def test_the_video_group_offload_recipe_is_the_guides_wan_recipe_placed_per_component() -> None:
    wan = resolve_model("wan2.1-t2v-14b", "random")
    space = SearchSpace.build(parse_spec('model = "wan2.1-t2v-14b"'), wan, H100)
    recipe = dict(space.baselines())["quantization + group offload"]
    guide = TrialConfig(
        quantization=(("transformer", "bnb_nf4"), ("text_encoder", "bnb_nf4")),
        compile="full",
        placement=(("transformer", "group_leaf"), ("vae", "group_leaf"), ("text_encoder", "group_leaf")),
        use_stream=True,
        non_blocking=True,
    )
    # Those three are every component of Wan2.1, so it is the pipeline-wide group offloading.
    assert recipe == space.shorthand(guide) == dataclasses.replace(guide, placement=(), offload="group_leaf")
    assert space.violations(recipe) == []


def test_shorthand_folds_only_a_placement_that_is_the_same_everywhere(flux: ModelInfo) -> None:
    space = flux_space()
    released = TrialConfig(placement=(("text_encoder", "released"), ("text_encoder_2", "released")))
    assert space.shorthand(released) == released
    every = TrialConfig(placement=tuple((c.name, "model") for c in flux.components))
    assert space.shorthand(every) == TrialConfig(offload="model")


def test_the_text_encoders_are_searched_resident_or_released_without_pipeline_wide_offload(tiny: ModelInfo) -> None:
    space = SearchSpace.build(open_spec(), tiny, H100)
    assert space.knobs()["place.text_encoder_2"] == ("resident", "released")
    released = space.suggest(FakeTrial({"offload": "none", "place.text_encoder_2": "released"}))
    assert released.placement == (("text_encoder_2", "released"),)
    offloaded = FakeTrial({"offload": "model", "place.text_encoder_2": "released"})
    assert space.suggest(offloaded).placement == () and "place.text_encoder_2" not in offloaded.asked
    small = SearchSpace.build(apply_overrides(load_default_spec(), offload="none,model"), tiny, H100)
    configs = list(itertools.islice(small.iter_configs(), 2000))
    assert any(c.placement for c in configs) and all(small.violations(c) == [] for c in configs)
    assert "place.text_encoder" not in SearchSpace.build(open_spec(), tiny, CPU).knobs()  # nothing to offload to


def test_a_placement_naming_a_missing_component_is_an_error_naming_the_components(flux: ModelInfo) -> None:
    message = "space.placement names 'unet', which flux.1-dev does not have (components: transformer, text_encoder,"
    with pytest.raises(SpaceError, match=re.escape(message)):
        SearchSpace.build(parse_spec('[space]\nplacement = ["unet:model"]\n'), flux, H100)
    with pytest.raises(SpaceError, match="vae:released: only text encoders are released after use"):
        SearchSpace.build(parse_spec('[space]\nplacement = ["vae:released"]\n'), flux, H100)


def test_the_group_options_apply_to_a_component_group_offloaded_on_its_own() -> None:
    space = flux_space(placement="transformer:resident,transformer:group_block")
    config = TrialConfig(placement=(("transformer", "group_block"),), blocks_per_group=2, use_stream=True)
    assert space.violations(config) == []
    assert config.to_params()["blocks_per_group"] == 2 and config.canonical().use_stream


def test_a_stored_placement_outside_the_space_is_removed_with_its_reason(flux: ModelInfo) -> None:
    space = flux_space(placement="transformer:resident,transformer:group_leaf")
    assert space.knobs()["place.transformer"] == ("resident", "group_leaf")
    reasons = space.violations(TrialConfig(placement=(("text_encoder_2", "released"),)))
    assert reasons == ["outside the study's space: the placement of text_encoder_2 is not searched"]
    missing = space.violations(TrialConfig(placement=(("unet", "model"),)))
    assert any("placement names unet, which flux.1-dev does not have" in r for r in missing)
