"""Study specs: strict TOML parsing, the stored form, command-line overrides and the shipped studies."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from qco_tune.core import spec as spec_module
from qco_tune.core.spec import (
    SpecError,
    apply_overrides,
    derive_name,
    load_default_spec,
    load_spec,
    parse_spec,
    spec_from_dict,
)
from qco_tune.core.studyspec import SpaceRestriction, StudySpec, spec_to_dict
from qco_tune.core.units import parse_duration

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30


def toml(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def spec_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(toml(text), source="study.toml")
    return info.value


# -- the format ------------------------------------------------------------------------------------------


def test_the_documented_example_parses() -> None:
    doc = spec_module.__doc__ or ""
    example = doc.split("::", 1)[1].split("\n\n", 1)[1].split("\nAn unknown field", 1)[0]
    spec = parse_spec(textwrap.dedent(example))
    assert spec.name == "flux.1-dev-16gib"
    assert spec.model == "flux.1-dev" and spec.weights == "random" and spec.dtype == "bfloat16"
    assert spec.workload.height == 1024 and spec.workload.frames == 33 and spec.workload.guidance == 3.5
    assert spec.workload.negative_prompt == "blurry"
    assert spec.vram_budget == 16 * GIB and spec.memory_metric == "device" and spec.host_ram_budget == 64 * GIB
    assert spec.trials == 20 and spec.timeout == 7200 and spec.trial_timeout == 1800
    assert (spec.timed_calls, spec.max_timed_calls, spec.warmup_calls, spec.seed_baselines) == (3, 10, 1, True)
    assert spec.space == SpaceRestriction(
        quantization=("none", "bnb_nf4", "torchao_fp8dq"),
        quantize_components=("transformer", "text_encoder_2"),
        compile=("none", "regional", "full"),
        compile_modes=("default", "max-autotune-no-cudagraphs"),
        fullgraph=(False, True),
        offload=("none", "model", "sequential", "group_block", "group_leaf"),
        blocks_per_group=(1, 2),
        placement=("text_encoder_2:resident", "text_encoder_2:released", "vae:model"),
        attention_backends=("native", "_native_cudnn", "flash", "sage"),
        layerwise_casting=("none", "float8_e4m3fn"),
        vae_tiling=(False, True),
        vae_slicing=(False, True),
        vae_channels_last=(False, True),
        tf32=(False, True),
        fuse_qkv=(False, True),
        denoiser_channels_last=(False, True),
        inductor_profiles=("default", "flux-fast"),
    )


def test_an_empty_spec_is_the_tiny_default_model() -> None:
    spec = parse_spec("")
    assert spec.model == "tiny-flux" and spec.weights == "random"
    assert spec.name == "tiny-flux-16gib"
    assert spec.space == SpaceRestriction()


def test_unknown_field_names_its_path_line_and_a_suggestion() -> None:
    error = spec_error(
        """
        model = "flux.1-dev"

        [run]
        trails = 3
        """
    )
    assert error.path == "run.trails" and error.line == 4
    assert str(error) == "study.toml, line 4: run.trails: unknown field; did you mean 'run.trials'?"


def test_unknown_table_and_known_key_in_the_wrong_table() -> None:
    error = spec_error("[extras]\nfoo = 1\n")
    assert (error.path, error.line) == ("extras", 1) and "unknown field" in str(error)
    error = spec_error("[workload]\nvram = '16GiB'\n")
    assert error.line == 2 and "did you mean 'budget.vram'?" in str(error)


def test_a_table_written_as_a_value() -> None:
    error = spec_error('budget = "16GiB"\n')
    assert error.line == 1 and "expected a table of budget.* keys, got a string" in str(error)


def test_dotted_keys_and_inline_tables_find_their_line() -> None:
    assert spec_error('model = "x"\nrun.trials = 0\n').line == 2
    assert spec_error('model = "tiny-flux"\nworkload = { height = "big" }\n').line == 2


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("[workload]\nheight = '1024'\n", "workload.height", "expected a whole number, got a string '1024'"),
        ("[workload]\nheight = 1000.0\n", "workload.height", "expected a whole number, got a number"),
        ("[workload]\nheight = 1020\n", "workload.height", "multiple of 8"),
        ("[workload]\nsteps = 0\n", "workload.steps", "must be positive, got 0"),
        ("[workload]\nguidance = -1\n", "workload.guidance", "must not be negative"),
        ("[workload]\nseed = true\n", "workload.seed", "expected a whole number, got a boolean"),
        ("[budget]\nvram = '16 gigs'\n", "budget.vram", "not a size: '16 gigs'"),
        ("[budget]\nvram = 0\n", "budget.vram", "size must be positive"),
        ("[budget]\nvram = '-4GiB'\n", "budget.vram", "not a size"),
        ("[budget]\ncounts = 'vram'\n", "budget.counts", "one of device, reserved, allocated"),
        ("[run]\ntrials = 0\n", "run.trials", "must be positive, got 0"),
        ("[run]\ntrials = -3\n", "run.trials", "must be positive, got -3"),
        ("[run]\ntimeout = 0\n", "run.timeout", "must be positive"),
        ("[run]\ntrial_timeout = '-5m'\n", "run.trial_timeout", "not a duration"),
        ("[run]\ntrial_timeout = 'soon'\n", "run.trial_timeout", 'write e.g. "90s"'),
        ("[run]\nseed_baselines = 'yes'\n", "run.seed_baselines", "expected true or false"),
        ("[run]\ntimed_calls = 4\nmax_timed_calls = 2\n", "run.max_timed_calls", "at least timed_calls (4)"),
        ("weights = 'fake'\n", "weights", "one of random, real"),
        ("dtype = 'fp8'\n", "dtype", "one of bfloat16, float16, float32"),
        ("model = ''\n", "model", "must not be empty"),
        ("[space]\noffload = ['none', 'modle']\n", "space.offload", "item 2: unknown value 'modle' (did you mean"),
        ("[space]\nquantization = 'bnb_nf4'\n", "space.quantization", "expected a list, got a string"),
        ("[space]\ncompile = []\n", "space.compile", "must not be empty (leave the key out"),
        ("[space]\nfullgraph = ['yes']\n", "space.fullgraph", "expected true or false"),
        ("[space]\nblocks_per_group = [1, 0]\n", "space.blocks_per_group", "item 2: must be positive"),
    ],
)
def test_bad_values_name_field_line_and_problem(text: str, path: str, fragment: str) -> None:
    error = spec_error(text)
    assert error.path == path
    assert error.line is not None and str(error).startswith(f"study.toml, line {error.line}: {path}: ")
    assert fragment in str(error)


def test_unknown_enum_value_lists_the_allowed_ones() -> None:
    error = spec_error("[space]\ncompile_modes = ['turbo']\n")
    assert "one of default, max-autotune-no-cudagraphs, max-autotune, reduce-overhead" in str(error)


def test_weights_follow_the_model_and_must_fit_it() -> None:
    assert parse_spec('model = "flux.1-schnell"\n').weights == "random"
    assert parse_spec('model = "black-forest-labs/FLUX.1-dev"\n').weights == "real"
    assert "has random weights only" in str(spec_error('model = "tiny-flux"\nweights = "real"\n'))
    error = spec_error('model = "org/model"\nweights = "random"\n')
    assert error.path == "weights" and error.line == 2 and "only for presets (tiny-flux, flux.1-dev" in str(error)
    error = spec_error('model = "flux.1-dvv"\nweights = "random"\n')
    assert error.path == "model" and error.line == 1 and "did you mean 'flux.1-dev'?" in str(error)


def test_not_toml_at_all() -> None:
    assert "not valid TOML" in str(spec_error("model = \n"))


def test_unlimited_trials_and_timeout() -> None:
    spec = parse_spec('[run]\ntrials = "unlimited"\ntimeout = "unlimited"\n')
    assert spec.trials is None and spec.timeout is None


def test_duplicates_in_lists_are_dropped() -> None:
    spec = parse_spec("[space]\noffload = ['none', 'model', 'none']\n")
    assert spec.space.offload == ("none", "model")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("45", 45), (45, 45), (2.5, 2.5)],
)
def test_durations(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "0", -1, "2 hours", "h", "5x", True])
def test_bad_durations(text: str | int | bool) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_names_are_derived_from_model_and_budget() -> None:
    assert parse_spec('model = "flux.1-dev"\n[budget]\nvram = "6GiB"\n').name == "flux.1-dev-6gib"
    assert parse_spec('model = "org/Some_Model"\n[budget]\nvram = "512MiB"\n').name == "some-model-512mib"
    assert parse_spec('name = "mine"\n').name == "mine"
    spec = StudySpec(name="", model="./models/my-pipe/", vram_budget=int(1.5 * GIB))
    assert derive_name(spec) == "my-pipe-1536mib"
    assert derive_name(dataclasses.replace(spec, vram_budget=10**10)) == "my-pipe-9.3gib"


# -- files ----------------------------------------------------------------------------------------------


def test_load_spec_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("[run]\ntrials = 0\n")
    with pytest.raises(SpecError, match=r"^mine.toml, line 2: run.trials: must be positive"):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot read the study spec"):
        load_spec(tmp_path / "missing.toml")


def test_the_default_spec_is_tiny_and_short() -> None:
    spec = load_default_spec()
    assert spec.model == "tiny-flux" and spec.weights == "random"
    assert spec.trials is not None and spec.trials >= 8
    assert spec.workload.height * spec.workload.width <= 128 * 128 and spec.workload.steps <= 4
    assert spec.trial_timeout <= 300


def test_the_repository_copy_of_the_default_is_the_packaged_one() -> None:
    packaged = (REPO / "qco_tune" / "studies" / "default.toml").read_text()
    assert (REPO / "studies" / "default.toml").read_text() == packaged


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_studies_load(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name and spec.trials


def test_shipped_study_names_and_workloads() -> None:
    flux = load_spec(REPO / "studies" / "flux-dev-16gib.toml")
    assert (flux.model, flux.vram_budget, flux.workload.height, flux.workload.steps) == (
        "flux.1-dev",
        16 * GIB,
        1024,
        28,
    )
    assert load_spec(REPO / "studies" / "flux-dev-6gib.toml").vram_budget == 6 * GIB
    wan = load_spec(REPO / "studies" / "wan2.1-1.3b-24gib.toml")
    assert (wan.workload.height, wan.workload.width, wan.workload.frames) == (480, 832, 33)
    assert wan.vram_budget == 24 * GIB


# -- the stored form --------------------------------------------------------------------------------------


def test_spec_from_dict_inverts_spec_to_dict() -> None:
    for spec in (load_default_spec(), load_spec(REPO / "studies" / "flux-dev-16gib.toml")):
        assert spec_from_dict(spec_to_dict(spec)) == spec


def test_spec_from_dict_keeps_unlimited_trials() -> None:
    spec = apply_overrides(load_default_spec(), trials="unlimited")
    assert spec.trials is None
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_spec_from_dict_is_as_strict() -> None:
    data = spec_to_dict(load_default_spec())
    with pytest.raises(SpecError, match=r"^workload.hieght: unknown field; did you mean 'workload.height'"):
        spec_from_dict({**data, "workload": {"hieght": 64}})
    with pytest.raises(SpecError, match=r"^vram_budget: expected a size"):
        spec_from_dict({**data, "vram_budget": [1]})
    with pytest.raises(SpecError, match=r"^space.offload: item 1: unknown value"):
        spec_from_dict({**data, "space": {"offload": ["everything"]}})
    with pytest.raises(SpecError, match="JSON object"):
        spec_from_dict([])  # type: ignore[arg-type]


# -- overrides ----------------------------------------------------------------------------------------------


def test_overrides_take_command_line_text() -> None:
    base = load_default_spec()
    spec = apply_overrides(
        base,
        budget="8GiB",
        trials="12",
        timeout="90s",
        trial_timeout=60,
        height="128",
        guidance="0",
        seed_baselines="false",
        compile="none,regional",
        fullgraph="false",
        blocks_per_group="1,2,4",
        counts="allocated",
        host_ram="32GiB",
    )
    assert spec.vram_budget == 8 * GIB and spec.trials == 12 and spec.timeout == 90 and spec.trial_timeout == 60
    assert spec.workload.height == 128 and spec.workload.guidance == 0 and spec.seed_baselines is False
    assert spec.space.compile == ("none", "regional") and spec.space.fullgraph == (False,)
    assert spec.space.blocks_per_group == (1, 2, 4)
    assert spec.memory_metric == "allocated" and spec.host_ram_budget == 32 * GIB
    assert spec.name == "tiny-flux-8gib"  # the derived name followed the budget


def test_overrides_without_arguments_change_nothing() -> None:
    base = load_default_spec()
    assert apply_overrides(base) == base


def test_an_explicit_name_is_kept_and_an_empty_one_derived() -> None:
    named = apply_overrides(load_default_spec(), name="demo")
    assert apply_overrides(named, budget="2GiB").name == "demo"
    assert apply_overrides(named, name="", budget="2GiB").name == "tiny-flux-2gib"


def test_a_new_model_brings_its_weights() -> None:
    base = load_default_spec()
    real = apply_overrides(base, model="black-forest-labs/FLUX.1-dev")
    assert real.weights == "real" and real.name == "flux.1-dev-4gib"
    assert apply_overrides(real, model="flux.1-schnell").weights == "random"


def test_a_revision_is_part_of_the_study_and_goes_with_its_model() -> None:
    spec = parse_spec(
        toml("""
        model = "org/name"
        revision = "v2"
        """),
        source="study.toml",
    )
    assert spec.revision == "v2" and spec_to_dict(spec)["revision"] == "v2"
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert spec.identity() != dataclasses.replace(spec, revision=None).identity()  # other weights, other study
    assert "revision" not in spec_to_dict(apply_overrides(spec, revision=""))  # empty: main, as before revisions
    assert apply_overrides(spec, trials=3).revision == "v2"
    assert apply_overrides(spec, model="org/other").revision is None  # a revision of the old model
    assert apply_overrides(spec, model="org/other", revision="abc").revision == "abc"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"trials": 0}, "--trials: must be positive, got 0"),
        ({"trials": "many"}, "--trials: expected a whole number"),
        ({"timeout": "-5m"}, "--timeout: not a duration"),
        ({"trial_timeout": "0"}, "--trial-timeout: must be positive"),
        ({"budget": "16 GB x"}, "--budget: not a size"),
        ({"budget": "0GiB"}, "--budget: size must be positive"),
        ({"offload": "none,modle"}, "--offload: item 2: unknown value 'modle'"),
        ({"weights": "real"}, "--weights: preset 'tiny-flux' has random weights only"),
        ({"max_timed_calls": 2}, "--max-timed-calls: must be at least timed_calls (3)"),
        ({"model": "  "}, "--model: must not be empty"),
        ({"name": "  "}, "--study: a study name must be printable text without surrounding spaces, got '  '"),
        ({"name": "a\tb"}, "--study: a study name must be printable text"),
        ({"height": 100}, "--height: must be a multiple of 8"),
    ],
)
def test_bad_overrides_name_the_flag(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        apply_overrides(load_default_spec(), **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == fragment or str(info.value).startswith(fragment)


def test_a_placement_entry_is_component_colon_placement() -> None:
    spec = parse_spec('[space]\nplacement = ["text_encoder_2:released", " vae : model "]\n')
    assert spec.space.placement == ("text_encoder_2:released", "vae:model")
    with pytest.raises(SpecError, match=r"^space.placement: item 1: expected component:placement"):
        spec_from_dict({"name": "x", "space": {"placement": ["text_encoder_2"]}})
    with pytest.raises(SpecError, match=r"placement: item 1: unknown value 'relased' \(did you mean 'released'"):
        parse_spec('[space]\nplacement = ["text_encoder_2:relased"]\n')
    assert apply_overrides(spec, placement="transformer:group_leaf").space.placement == ("transformer:group_leaf",)
