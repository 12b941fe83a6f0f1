"""The exporter's pieces: the plan, JSON and TOML round trips, reading configuration files, the quantization table."""

from __future__ import annotations

import ast
import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from export_cases import FLUX_WORKLOAD, sample_space

from qco_tune.calls.quantconfigs import BACKEND_CONFIGS, build_config, config_call
from qco_tune.core.config import CONFIG_SCHEMA_VERSION, TrialConfig
from qco_tune.core.records import ComponentInfo, ModelInfo
from qco_tune.core.studyspec import Workload
from qco_tune.export.formats import load_config, render_json, render_toml
from qco_tune.export.plan import ExportHeader, plan_call, plan_export, plan_quantization
from qco_tune.export.render import render, render_python

NF4 = (("transformer", "bnb_nf4"), ("text_encoder_2", "bnb_nf4"))


def sample(preset: str, n: int = 300) -> list[TrialConfig]:
    """A seeded random sample of the configurations of ``preset``'s whole space."""
    return sample_space(preset, n)


# -- the plan ----------------------------------------------------------------------------------------


def test_one_bitsandbytes_backend_is_written_as_the_guide_writes_it(flux: ModelInfo) -> None:
    plan = plan_quantization(TrialConfig(quantization=NF4), flux)
    assert plan is not None and plan.quant_backend == "bitsandbytes_4bit"
    assert plan.components == ("transformer", "text_encoder_2")  # the denoiser first, as in the guide


@pytest.mark.parametrize(
    "quantization",
    [
        (("transformer", "bnb_nf4"), ("text_encoder_2", "bnb_int8")),  # two backends
        (("transformer", "torchao_int8wo"),),  # the TorchAoConfig signatures differ between libraries
        (("text_encoder_2", "quanto_int8"),),  # so do the QuantoConfig ones
    ],
)
def test_other_quantizations_are_a_mapping(flux: ModelInfo, quantization: tuple[tuple[str, str], ...]) -> None:
    plan = plan_quantization(TrialConfig(quantization=quantization), flux)  # type: ignore[arg-type]
    assert plan is not None and plan.quant_backend is None
    assert {c for c, _ in plan.mapping} == {c for c, _ in quantization}


def test_text_encoders_get_transformers_classes(flux: ModelInfo) -> None:
    plan = plan_quantization(
        TrialConfig(quantization=(("transformer", "quanto_int8"), ("text_encoder", "quanto_int8"))), flux
    )
    assert plan is not None
    libraries = {component: call.func.module for component, call in plan.mapping}
    assert libraries == {"transformer": "diffusers", "text_encoder": "transformers"}


def test_quantizing_a_component_the_model_lacks_is_refused(flux: ModelInfo) -> None:
    with pytest.raises(ValueError, match="unet"):
        plan_quantization(TrialConfig(quantization=(("unet", "bnb_nf4"),)), flux)
    with_other = dataclasses.replace(
        flux, components=(*flux.components, ComponentInfo("image_encoder", "other", "CLIPVisionModel"))
    )
    with pytest.raises(ValueError, match="image_encoder"):
        plan_quantization(TrialConfig(quantization=(("image_encoder", "bnb_nf4"),)), with_other)


def test_offloading_leaves_the_pipeline_where_it_was_loaded(flux: ModelInfo) -> None:
    for offload in ("model", "sequential", "group_leaf"):
        plan = plan_export(TrialConfig(offload=offload), model=flux, workload=FLUX_WORKLOAD)  # type: ignore[arg-type]
        assert not plan.move_to_device
    assert plan_export(TrialConfig(), model=flux, workload=FLUX_WORKLOAD).move_to_device


def test_knobs_that_mean_nothing_are_not_written(flux: ModelInfo) -> None:
    noisy = TrialConfig(compile_mode="max-autotune", fullgraph=True, use_stream=True, blocks_per_group=4)
    assert render_python(noisy, model=flux, workload=FLUX_WORKLOAD) == render_python(
        TrialConfig(), model=flux, workload=FLUX_WORKLOAD
    )


def test_the_pipeline_call_takes_only_what_the_trial_passed() -> None:
    workload = Workload(negative_prompt="blurry", guidance=3.5, max_sequence_length=256, frames=33)
    _, kwargs = plan_call(workload, video=False, call_parameters=("prompt", "height", "width", "guidance_scale"))
    names = [k for k, _ in kwargs]
    assert names == ["prompt", "height", "width", "num_inference_steps", "guidance_scale", "generator"]
    _, everything = plan_call(workload, video=True)
    assert "negative_prompt" in dict(everything) and "num_frames" in dict(everything)


def test_a_component_name_that_is_not_an_identifier_is_subscripted() -> None:
    odd = ModelInfo(
        reference="odd",
        source="local",
        pipeline_class="FluxPipeline",
        components=(
            ComponentInfo("transformer", "denoiser", "FluxTransformer2DModel"),
            ComponentInfo("text-encoder; x", "text_encoder", "T5EncoderModel"),
        ),
    )
    source = render_python(TrialConfig(offload="group_leaf"), model=odd, workload=Workload())
    assert "pipeline.components['text-encoder; x']" in source or 'pipeline.components["text-encoder; x"]' in source
    ast.parse(source)


def test_the_snippet_loads_the_revision_the_study_measured(flux: ModelInfo) -> None:
    hub = dataclasses.replace(flux, reference="org/name", source="hub", path="/snapshots/b", revision="v2")
    loads = [
        node
        for node in ast.walk(ast.parse(render_python(TrialConfig(), model=hub, workload=FLUX_WORKLOAD)))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_pretrained"
    ]
    assert [ast.literal_eval(node.args[0]) for node in loads] == ["org/name"]
    assert {k.arg: ast.literal_eval(k.value) for k in loads[0].keywords if k.arg == "revision"} == {"revision": "v2"}
    # another model (--model), or the study's at main, loads without one
    for model, ref in ((hub, "org/other"), (dataclasses.replace(hub, revision=None), None)):
        assert "revision=" not in render_python(TrialConfig(), model=model, workload=FLUX_WORKLOAD, model_ref=ref)


def test_unknown_dtype_is_refused(flux: ModelInfo) -> None:
    with pytest.raises(ValueError, match="dtype"):
        render_python(TrialConfig(), model=flux, workload=Workload(), dtype="int4")


def test_unknown_format_is_refused(flux: ModelInfo) -> None:
    with pytest.raises(ValueError, match="format"):
        render("yaml", TrialConfig(), model=flux, workload=Workload())


# -- JSON and TOML -----------------------------------------------------------------------------------


def test_configurations_round_trip_through_json_and_toml() -> None:
    for config in sample("flux.1-dev") + sample("wan2.1-t2v-14b"):
        assert TrialConfig.from_dict(json.loads(render_json(config))) == config.canonical()
        assert TrialConfig.from_dict(tomllib.loads(render_toml(config))) == config.canonical()


def test_toml_quotes_odd_component_names_and_keeps_the_header_as_comments() -> None:
    config = TrialConfig(quantization=(('te "2"\n[x]', "bnb_nf4"), ("transformer", "quanto_int8")))
    header = ExportHeader(study='s"\n[evil]\nx = 1', trial=1, best=True, qco_version="0.1.0", latency_s=1.0)
    text = render_toml(config, header)
    data = tomllib.loads(text)
    assert "evil" not in data
    assert TrialConfig.from_dict(data) == config


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_load_config_reads_exported_files(tmp_path: Path, suffix: str) -> None:
    config = TrialConfig(
        quantization=NF4, compile="regional", offload="group_block", blocks_per_group=2, use_stream=True
    )
    path = tmp_path / f"tuned{suffix}"
    path.write_text(render_json(config) if suffix == ".json" else render_toml(config))
    assert load_config(path) == config.canonical()
    assert load_config(str(path)) == config.canonical()
    assert load_config(config.to_dict()) == config.canonical()
    assert load_config(config) is config


def test_load_config_errors_are_one_line(tmp_path: Path) -> None:
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**TrialConfig().to_dict(), "version": CONFIG_SCHEMA_VERSION + 1}))
    broken = tmp_path / "broken.toml"
    broken.write_text("compile = \n")
    unknown = tmp_path / "tuned.yaml"
    unknown.write_text("{}")
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    for path, fragment in [
        (newer, "newer than this qco-tune"),
        (broken, "not a readable configuration"),
        (unknown, ".json or .toml"),
        (listed, "does not hold a configuration"),
    ]:
        with pytest.raises(ValueError, match=fragment) as info:
            load_config(path)
        assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="unknown configuration field"):
        load_config({"compile": "full", "turbo": True})


# -- the quantization table --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", sorted(BACKEND_CONFIGS))
@pytest.mark.parametrize("library", ["diffusers", "transformers"])
def test_table_objects_equal_what_the_snippet_builds(backend: str, library: str) -> None:
    """``build_config`` (for the backends) and the written call (for users) give the same object."""
    pytest.importorskip("diffusers")
    from qco_tune.core.pycode import Imports, format_node, value_node

    imports = Imports()
    expression = "\n".join(format_node(value_node(config_call(backend, library), imports)))
    scope: dict[str, object] = {}
    exec("\n".join(imports.render()), scope)
    written = eval(expression, scope)
    built = build_config(backend, library)
    assert type(written) is type(built)
    assert type(built).__module__.split(".")[0] == library
    assert written.to_dict() == built.to_dict()


def test_headers_are_frozen_value_objects() -> None:
    header = ExportHeader(study="s", trial=1, best=False, qco_version="0.1.0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.trial = 2  # type: ignore[misc]
