"""Export and apply cannot drift apart: a snippet and ``qco_tune.from_pretrained`` do the same calls.

Both run against one FAKE recording pipeline (no weights, no GPU): the quantization each component
loads with, the Dynamo settings, the device moves, the offloading and compile calls (arguments with
their defaults filled in), and the pipeline call compared with the trial's own ``call_kwargs``.
The recorded calls also read back into the configuration that was exported.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Any

import pytest
from export_cases import CASES, Case, random_config, whole_space
from export_fakes import Trace, recording, run_snippet, write_model_index
from export_helpers import ruff_problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qco_tune
from qco_tune.calls.dynamo import INDUCTOR_PROFILES
from qco_tune.core.config import TrialConfig
from qco_tune.core.modelref import read_pipeline_folder
from qco_tune.core.presets import get_preset
from qco_tune.core.records import ModelInfo
from qco_tune.core.studyspec import Workload
from qco_tune.export.render import render_python

pytest.importorskip("diffusers")


def snippet_trace(source: str, model: ModelInfo, monkeypatch: pytest.MonkeyPatch, cwd: Path) -> Trace:
    monkeypatch.chdir(cwd)
    with recording(model, monkeypatch) as trace:
        run_snippet(source)
    return trace


def trial_trace(
    folder: Path, config: TrialConfig, workload: Workload, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> Trace:
    """What a trial does: ``qco_tune.from_pretrained`` (load_pipeline + apply_config), then one call."""
    from qco_tune.measure.backends.child import call_kwargs

    model = read_pipeline_folder(folder, reference=str(folder))
    with recording(model, monkeypatch) as trace:
        pipe = qco_tune.from_pretrained(folder, config, dtype=dtype, device="cuda")
        pipe(**call_kwargs(pipe, workload, model.is_video, None))
    return trace


# -- reading a trace back into a configuration ------------------------------------------------------

_TORCHAO = {
    "Int8WeightOnlyConfig": "torchao_int8wo",
    "Float8DynamicActivationFloat8WeightConfig": "torchao_fp8dq",
    "Int4WeightOnlyConfig": "torchao_int4wo",
    "Float8WeightOnlyConfig": "torchao_fp8wo",
    "Int8DynamicActivationInt8WeightConfig": "torchao_int8dq",
}
_QUANTO = {"int8": "quanto_int8", "int4": "quanto_int4", "float8": "quanto_fp8"}


def _backend(library_class_settings: tuple[str, str, dict[str, Any]]) -> str:
    _, cls, settings = library_class_settings
    if cls == "BitsAndBytesConfig":
        if settings["load_in_8bit"]:
            return "bnb_int8"
        return {"nf4": "bnb_nf4", "fp4": "bnb_fp4"}[settings["bnb_4bit_quant_type"]]
    if cls == "TorchAoConfig":
        return _TORCHAO[settings["quant_type"]["default"]["_type"]]
    if cls == "QuantoConfig":
        return _QUANTO[settings.get("weights_dtype", settings.get("weights"))]
    raise AssertionError(f"unexpected quantization config {cls}")


def config_from_trace(trace: Trace) -> TrialConfig:
    """The configuration a trace carries out, read from the calls alone."""
    (_, load), *_ = trace.loads
    fields: dict[str, Any] = {"quantization": tuple((c, _backend(d)) for c, d in load["quantization"].items())}
    placed: dict[str, str] = {}
    hook_on = ""
    for target, action, args in trace.calls:
        if action == "group_offload":
            placed[target] = "group_leaf" if args["offload_type"] == "leaf_level" else "group_block"
        elif action == "cpu_offload":
            placed[target] = "sequential"
        elif action == "cpu_offload_with_hook":
            placed[target] = "model"
        elif action == "forward_pre_hook":
            hook_on = target
        elif action == "offloaded_by_hook" and hook_on == "transformer" and target.startswith("text_encoder"):
            placed[target] = "released"  # (the last text encoder, followed by the denoiser, is released either way)
        elif action == "to" and target != "pipeline" and "memory_format" not in args:
            placed[target] = "resident"
    per_component = set(placed.values()) - {"group_leaf", "group_block"} or len(set(placed.values())) > 1
    if per_component:
        fields["placement"] = tuple(placed.items())
    for target, action, args in trace.calls:
        if action in ("compile", "compile_repeated_blocks"):
            assert target == "transformer"
            fields.update(compile="full" if action == "compile" else "regional", compile_mode=args["mode"])
            fields["fullgraph"] = args["fullgraph"]
        elif action in ("model_cpu_offload", "sequential_cpu_offload"):
            fields["offload"] = action.split("_")[0]
        elif action == "group_offload":
            leaf = args["offload_type"] == "leaf_level"
            fields.update(offload="none" if per_component else "group_leaf" if leaf else "group_block")
            if not leaf:
                fields["blocks_per_group"] = args["num_blocks_per_group"]
            for flag in ("use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage"):
                fields[flag] = args[flag]
        elif action == "enable_layerwise_casting":
            assert target == "transformer" and args["compute_dtype"] == load["dtype"]
            fields["layerwise_casting"] = args["storage_dtype"].removeprefix("torch.")
        elif action == "set_attention_backend":
            assert target == "transformer"
            fields["attention_backend"] = args["backend"]
        elif action in ("enable_tiling", "enable_slicing"):
            assert target == "vae"
            fields["vae_tiling" if action == "enable_tiling" else "vae_slicing"] = True
        elif action == "to" and target == "vae" and "memory_format" in args:
            assert args == {"args": [], "memory_format": "torch.channels_last"}
            fields["vae_channels_last"] = True
        elif action == "to" and target == "transformer" and "memory_format" in args:
            assert args == {"args": [], "memory_format": "torch.channels_last"}
            fields["denoiser_channels_last"] = True
        elif action == "fuse_qkv_projections":
            assert target == "transformer" and args == {}
            fields["fuse_qkv"] = True
        elif action == "quantize_":  # torchao's, after fusing: the denoiser loaded unquantized
            assert target == "transformer" and fields.get("fuse_qkv")
            assert (target, "fuse_qkv_projections", {}) in trace.calls[: trace.calls.index((target, action, args))]
            fields["quantization"] += ((target, _TORCHAO[args["config"]]),)
    fields["tf32"] = trace.float32_matmul_precision == "high"
    profiles = [name for name, flags in INDUCTOR_PROFILES.items() if flags == trace.inductor]
    fields["inductor_profile"] = profiles[0]  # no profile matching what the code set: a failure here
    return TrialConfig(**fields).canonical()


def assert_same(snippet: Trace, trial: Trace) -> None:
    assert snippet.loads == trial.loads
    assert snippet.dynamo == trial.dynamo
    assert snippet.inductor == trial.inductor
    assert snippet.float32_matmul_precision == trial.float32_matmul_precision
    assert snippet.calls == trial.calls
    assert snippet.pipeline_calls == trial.pipeline_calls


# -- the golden cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_snippet_does_what_the_trial_does(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_model_index(tmp_path / "model", case.model)
    source = render_python(
        case.config, model=case.model, workload=case.workload, dtype=case.dtype, model_ref=str(folder)
    )
    exported = snippet_trace(source, case.model, monkeypatch, tmp_path)
    trial = trial_trace(folder, case.config, case.workload, case.dtype, monkeypatch)
    assert_same(exported, trial)
    assert config_from_trace(exported) == case.config.canonical()
    assert exported.saved == ([("video", "output.mp4", "16")] if case.model.is_video else [("output.png",)])


def test_apply_on_a_loaded_pipeline_matches_the_snippet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``qco_tune.apply`` takes the configuration as a dict or a file and does the snippet's post-load calls."""
    case = next(c for c in CASES if c.name == "bf16_regional_compile")
    config_file = tmp_path / "tuned.json"
    config_file.write_text(qco_tune.export.formats.render_json(case.config))
    folder = write_model_index(tmp_path / "model", case.model)
    source = render_python(case.config, model=case.model, workload=case.workload, model_ref=str(folder))
    exported = snippet_trace(source, case.model, monkeypatch, tmp_path)
    for given_config in (config_file, str(config_file), case.config.to_dict(), case.config):
        with recording(case.model, monkeypatch) as trace:
            import diffusers

            pipe = diffusers.DiffusionPipeline.from_pretrained(str(folder), dtype=__import__("torch").bfloat16)
            qco_tune.apply(pipe, given_config, device="cuda")
        assert trace.calls == exported.calls
        assert trace.dynamo == exported.dynamo
        assert trace.inductor == exported.inductor


# -- the property: every configuration of the space ---------------------------------------------------


@st.composite
def exports(draw: st.DrawFn) -> tuple[str, TrialConfig, Workload, str]:
    preset = draw(st.sampled_from(["flux.1-dev", "wan2.1-t2v-1.3b"]))
    dtype = draw(st.sampled_from(["bfloat16", "float16"]))
    config = random_config(preset, draw(st.integers(0, 2**32)), dtype)
    words = st.text(min_size=0, max_size=120)
    workload = Workload(
        prompt=draw(words),
        negative_prompt=draw(st.none() | words),
        height=draw(st.sampled_from([64, 512, 1024])),
        width=draw(st.sampled_from([64, 768, 1024])),
        frames=draw(st.sampled_from([None, 33, 81])),
        steps=draw(st.integers(1, 50)),
        guidance=draw(st.none() | st.sampled_from([1.0, 3.5, 5.0])),
        seed=draw(st.integers(0, 2**31)),
        max_sequence_length=draw(st.none() | st.sampled_from([64, 512])),
    )
    return preset, config, workload, dtype


def test_the_space_is_large() -> None:
    flux = itertools.islice(whole_space("flux.1-dev").iter_configs(), 100_001)
    assert sum(1 for _ in flux) > 100_000
    # quantization of three components, placement of the two text encoders and 18 other knobs
    assert len(whole_space("flux.1-dev").knobs()) == 23


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=exports())
def test_any_configuration_exports_to_clean_code_that_reads_back(
    case: tuple[str, TrialConfig, Workload, str],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    preset, config, workload, dtype = case
    model = get_preset(preset).model_info()
    tmp = tmp_path_factory.mktemp("export")
    folder = write_model_index(tmp / "model with 'quotes' \"here\"", model)
    source = render_python(config, model=model, workload=workload, dtype=dtype, model_ref=str(folder))
    ast.parse(source)
    assert ruff_problems(source) == ""
    exported = snippet_trace(source, model, monkeypatch, tmp)
    assert config_from_trace(exported) == config.canonical()
    assert_same(exported, trial_trace(folder, config, workload, dtype, monkeypatch))
    monkeypatch.undo()
