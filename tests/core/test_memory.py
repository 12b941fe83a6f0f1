"""The memory model: sensible orderings, unknowns, budget checks and the smallest need of a space."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fake_machines import CPU, H100

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import ComponentInfo, ModelInfo
from qco_tune.core.spec import parse_spec
from qco_tune.core.studyspec import StudySpec
from qco_tune.search import memory
from qco_tune.search.memory import MemoryPrediction, over_budget, over_budget_bytes, predict, smallest_need
from qco_tune.search.space import SearchSpace

GIB = 2**30
NF4 = TrialConfig(quantization=(("text_encoder_2", "bnb_nf4"), ("transformer", "bnb_nf4")))
FLUX_1024 = 'model = "flux.1-dev"\n[workload]\nheight = 1024\nwidth = 1024\nmax_sequence_length = 512\n'


def flux_spec(counts: str = "device") -> StudySpec:
    return parse_spec(FLUX_1024 + f'[budget]\nvram = "16GiB"\ncounts = "{counts}"\n')


def need(model: ModelInfo, config: TrialConfig, spec: StudySpec | None = None) -> int:
    value = predict(model, config, spec or flux_spec(), H100).device_bytes
    assert value is not None
    return value


def test_quantization_needs_less(flux: ModelInfo) -> None:
    int8 = TrialConfig(quantization=(("text_encoder_2", "torchao_int8wo"), ("transformer", "torchao_int8wo")))
    assert need(flux, NF4) < need(flux, int8) < need(flux, TrialConfig())


def test_offloading_needs_less_device_memory_and_more_host_memory(flux: ModelInfo) -> None:
    none, model, leaf = TrialConfig(), TrialConfig(offload="model"), TrialConfig(offload="group_leaf")
    assert need(flux, leaf) < need(flux, model) < need(flux, none)
    host = {c: predict(flux, c, flux_spec(), H100).host_bytes or 0 for c in (none, model)}
    assert host[model] > host[none]


def test_prefetching_and_bigger_groups_need_more(flux: ModelInfo) -> None:
    # At 512x512 the denoiser's blocks outweigh the VAE decode (which dominates at 1024x1024).
    spec = parse_spec('model = "flux.1-dev"\n[workload]\nheight = 512\nwidth = 512\n')
    one = TrialConfig(offload="group_block", blocks_per_group=1)
    four = dataclasses.replace(one, blocks_per_group=4)
    streamed = dataclasses.replace(one, use_stream=True)
    assert need(flux, one, spec) < need(flux, four, spec)
    assert need(flux, one, spec) < need(flux, streamed, spec)


def test_the_counted_metric_orders_allocated_reserved_device(flux: ModelInfo) -> None:
    counted = [need(flux, TrialConfig(), flux_spec(m)) for m in ("allocated", "reserved", "device")]
    assert counted == sorted(counted) and len(set(counted)) == 3


def test_close_to_the_flux_measurements_in_the_design(flux: ModelInfo) -> None:
    # DESIGN.md, H100: bf16 33.9 GiB allocated, NF4 transformer + T5 13.1 GiB allocated.
    assert need(flux, TrialConfig(), flux_spec("allocated")) / GIB == pytest.approx(33.9, rel=0.15)
    assert need(flux, NF4, flux_spec("allocated")) / GIB == pytest.approx(13.1, rel=0.25)


def test_bigger_workloads_need_more(flux: ModelInfo) -> None:
    small = parse_spec('model = "flux.1-dev"\n[workload]\nheight = 512\nwidth = 512\n')
    assert need(flux, TrialConfig(), small) < need(flux, TrialConfig())


def test_on_a_cpu_the_budget_counts_host_memory(flux: ModelInfo) -> None:
    prediction = predict(flux, TrialConfig(), flux_spec(), CPU)
    assert prediction.device_bytes == prediction.host_bytes
    assert prediction.device_bytes is not None and prediction.device_bytes > 31 * GIB


def test_unknown_parameter_counts_give_no_prediction() -> None:
    model = ModelInfo(
        reference="./pipe",
        source="local",
        pipeline_class="FluxPipeline",
        components=(ComponentInfo("transformer", "denoiser", "FluxTransformer2DModel", None),),
        path="./pipe",
    )
    prediction = predict(model, TrialConfig(), flux_spec(), H100)
    assert prediction.device_bytes is None and prediction.host_bytes is None
    assert "transformer" in prediction.detail
    space = SearchSpace.build(parse_spec('model = "tiny-flux"'), model, H100)
    assert smallest_need(space, model, flux_spec(), H100) is None


def test_over_budget_only_when_clearly_over() -> None:
    budget = 16 * GIB
    assert not over_budget(MemoryPrediction(20 * GIB, None, ""), budget)
    assert over_budget(MemoryPrediction(25 * GIB, None, ""), budget)
    assert over_budget(MemoryPrediction(17 * GIB, None, ""), budget, margin=1.0)
    assert not over_budget(MemoryPrediction(None, None, ""), budget)
    assert over_budget_bytes(25 * GIB, budget) and not over_budget_bytes(16 * GIB, budget)


def test_smallest_need_is_the_minimum_over_the_space(flux: ModelInfo) -> None:
    spec = parse_spec(FLUX_1024 + '[space]\nquantization = ["none", "bnb_nf4"]\ncompile = ["none"]\n')
    space = SearchSpace.build(spec, flux, H100)
    smallest = smallest_need(space, flux, spec, H100)
    predictions = [need(flux, c, spec) for c in space.enumerate()]
    assert smallest == min(predictions)
    releasing = dataclasses.replace(spec, space=dataclasses.replace(spec.space, offload=("none",)))
    kept = ("text_encoder:resident", "text_encoder_2:resident")
    resident = dataclasses.replace(releasing, space=dataclasses.replace(releasing.space, placement=kept))
    everything_nf4 = TrialConfig(quantization=tuple((c, "bnb_nf4") for c in (*flux.text_encoders, "transformer")))
    tiled = dataclasses.replace(everything_nf4, vae_tiling=True)  # the VAE decode's 1024x1024 peak in 512x512 tiles
    assert smallest_need(SearchSpace.build(resident, flux, H100), flux, spec, H100) == need(flux, tiled, spec)
    untiled = dataclasses.replace(resident, space=dataclasses.replace(resident.space, vae_tiling=(False,)))
    assert smallest_need(SearchSpace.build(untiled, flux, H100), flux, spec, H100) == need(flux, everything_nf4, spec)
    assert need(flux, tiled, spec) < need(flux, everything_nf4, spec)
    released = dataclasses.replace(tiled, placement=RELEASED)  # the text encoders on the device only while encoding
    assert smallest_need(SearchSpace.build(releasing, flux, H100), flux, spec, H100) == need(flux, released, spec)


def test_the_shape_of_a_local_model_comes_from_its_config(tmp_path: Path, flux: ModelInfo) -> None:
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(
        '{"num_attention_heads": 2, "attention_head_dim": 8, "num_layers": 1, "num_single_layers": 1, "patch_size": 1}'
    )
    local = dataclasses.replace(flux, reference=str(tmp_path), source="local", path=str(tmp_path))
    narrow = memory.denoiser_shape(local)
    assert (narrow.hidden_size, narrow.num_blocks, narrow.patch_size) == (16, 2, 1)


# -- placement per component ---------------------------------------------------------------------------------

FP8_NF4 = (("transformer", "torchao_fp8dq"), ("text_encoder_2", "bnb_nf4"))
RELEASED = (("text_encoder", "released"), ("text_encoder_2", "released"))


def test_releasing_the_text_encoders_needs_less_than_keeping_them(flux: ModelInfo) -> None:
    resident = TrialConfig(quantization=FP8_NF4)
    released = TrialConfig(quantization=FP8_NF4, placement=RELEASED)
    tiled = dataclasses.replace(released, vae_tiling=True)
    assert need(flux, tiled) < need(flux, released) < need(flux, resident)
    host = [predict(flux, c, flux_spec(), H100).host_bytes or 0 for c in (resident, released)]
    assert host[0] < host[1]  # released weights live on the host between uses


def test_a_released_encoder_stays_on_the_device_until_the_denoiser_starts(flux: ModelInfo) -> None:
    """Released CLIP is still there while T5 encodes; CLIP placed ``model`` is moved off when T5 starts."""
    t5_alone = TrialConfig(quantization=FP8_NF4, placement=(("text_encoder", "model"), ("text_encoder_2", "released")))
    both = TrialConfig(quantization=FP8_NF4, placement=RELEASED)
    detail = predict(flux, dataclasses.replace(both, vae_tiling=True), flux_spec(), H100).detail
    assert "text_encoder_2 released" in detail and "text_encoder not yet moved off" in detail
    assert need(flux, dataclasses.replace(t5_alone, vae_tiling=True)) < need(
        flux, dataclasses.replace(both, vae_tiling=True)
    )


def test_model_offload_of_every_component_predicts_as_the_shorthand(flux: ModelInfo) -> None:
    shorthand = TrialConfig(quantization=NF4.quantization, offload="model")
    per_component = TrialConfig(
        quantization=NF4.quantization, placement=tuple((c.name, "model") for c in flux.components)
    )
    assert per_component.placement  # placed one by one, not the shorthand
    assert need(flux, per_component) == need(flux, shorthand)


def test_a_group_offloaded_transformer_beside_resident_components(flux: ModelInfo) -> None:
    group = TrialConfig(placement=(("transformer", "group_leaf"),), use_stream=True)
    assert need(flux, group) < need(flux, TrialConfig())
    assert need(flux, group) > need(flux, TrialConfig(offload="group_leaf", use_stream=True))
