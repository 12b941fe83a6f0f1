"""Fused QKV projections with a quantized denoiser in the core: a torchao denoiser loads unquantized, is fused,
then quantized with torchao's ``quantize_`` (huggingface/flux-fast's order); bitsandbytes and quanto stay excluded.
The rules, the calls, the export plan and the memory model's load phase."""

from __future__ import annotations

import dataclasses

import pytest
from fake_machines import H100

from qco_tune.calls.backends import BACKEND_INFO, backends_of
from qco_tune.calls.quantconfigs import quantized_after_fusing, quantized_at_load
from qco_tune.calls.settings import pipeline_settings
from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.pycode import Call, Code, Name
from qco_tune.core.records import ModelInfo
from qco_tune.core.spec import parse_spec
from qco_tune.core.studyspec import StudySpec, Workload
from qco_tune.export.plan import plan_export
from qco_tune.search.memory import DTYPE_BYTES, FUSED_QKV_SHARE, predict
from qco_tune.search.space import SearchSpace

TORCHAO = sorted(backends_of("torchao"))


def _flux() -> ModelInfo:
    return get_preset("flux.1-dev").model_info()


def _spec(extra: str = "", budget: str = "") -> StudySpec:
    space = '[space]\nquantize_components = ["transformer", "text_encoder_2"]\n'
    return parse_spec(f'model = "flux.1-dev"\n{budget}{space}{extra}')


def _fused(backend: str, **more: object) -> TrialConfig:
    return TrialConfig(quantization=(("transformer", backend),), fuse_qkv=True, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", TORCHAO)
def test_a_torchao_denoiser_is_fused_then_quantized(backend: str) -> None:
    space = SearchSpace.build(_spec(), _flux(), H100)
    config = _fused(backend)
    assert space.violations(config) == []
    assert quantized_after_fusing(config, "transformer") == backend
    assert quantized_at_load(config, "transformer") == ()
    calls = pipeline_settings(dataclasses.replace(config, denoiser_channels_last=True), "bfloat16", "transformer")
    assert [c.method for c in calls] == ["fuse_qkv_projections", "to", "quantize_"]  # flux-fast's order
    quantize = calls[-1]
    assert quantize.function == Name("torchao.quantization", "quantize_")
    # The registry's one description: the argument of the TorchAoConfig the backend loads with otherwise.
    assert quantize.args == BACKEND_INFO[backend].config.args and isinstance(quantize.args[0], Call)


@pytest.mark.parametrize(("backend", "why"), [("bnb_nf4", "packed bytes"), ("quanto_int8", "dequantizes them")])
def test_bitsandbytes_and_quanto_denoisers_stay_excluded(backend: str, why: str) -> None:
    space = SearchSpace.build(_spec(), _flux(), H100)
    (reason,) = space.violations(_fused(backend))
    assert reason.startswith(f"fused QKV projections concatenate the unquantized weights, and transformer is {backend}")
    assert why in reason
    assert quantized_after_fusing(_fused(backend), "transformer") is None


def test_the_space_enumerates_fused_torchao_and_no_fused_bitsandbytes() -> None:
    spec = _spec('quantization = ["none", "bnb_nf4", "torchao_int8wo"]\ncompile = ["none"]\n')
    enumerated = SearchSpace.build(spec, _flux(), H100).enumerate()
    fused = {c.backend_for("transformer") for c in enumerated if c.fuse_qkv}
    assert fused == {"none", "torchao_int8wo"}


def test_unfused_or_text_encoder_quantization_still_loads_quantized() -> None:
    unfused = TrialConfig(quantization=(("transformer", "torchao_int8wo"),))
    assert quantized_after_fusing(unfused, "transformer") is None
    assert [c.method for c in pipeline_settings(unfused, "bfloat16", "transformer")] == []
    mixed = TrialConfig(
        quantization=(("text_encoder_2", "torchao_int8wo"), ("transformer", "torchao_fp8dq")), fuse_qkv=True
    )
    assert quantized_at_load(mixed, "transformer") == (("text_encoder_2", "torchao_int8wo"),)


def test_the_export_plan_loads_the_denoiser_unquantized_and_quantizes_it_after_fusing() -> None:
    config = TrialConfig(quantization=(("text_encoder_2", "bnb_nf4"), ("transformer", "torchao_fp8dq")), fuse_qkv=True)
    plan = plan_export(config, model=_flux(), workload=Workload())
    assert plan.quantization is not None and plan.quantization.components == ("text_encoder_2",)
    callees = [s.callee for s in plan.settings]
    assert callees == [Code("pipeline.transformer.fuse_qkv_projections"), Name("torchao.quantization", "quantize_")]
    assert plan.settings[1].args[0] == Code("pipeline.transformer")
    only_denoiser = plan_export(_fused("torchao_int8wo"), model=_flux(), workload=Workload())
    assert only_denoiser.quantization is None and only_denoiser.move_to_device


def test_the_load_peak_is_the_unquantized_fused_denoiser_on_the_device() -> None:
    spec, flux = _spec(budget='[budget]\ncounts = "allocated"\n'), _flux()
    dtype_bytes = DTYPE_BYTES[spec.dtype]
    transformer = (flux.component("transformer").params or 0) * dtype_bytes
    others = sum((c.params or 0) * dtype_bytes for c in flux.components if c.name != "transformer")
    fused = predict(flux, _fused("torchao_fp8dq"), spec, H100)
    assert fused.device_terms is not None
    # FLUX.1-dev: 23.8 GB in bf16, 28 GB fused, the rest of the pipeline beside it, before quantize_.
    assert fused.device_terms.total == pytest.approx(transformer * (1 + FUSED_QKV_SHARE) + others)
    assert "load: transformer unquantized and fused" in fused.detail
    at_load = predict(flux, TrialConfig(quantization=(("transformer", "torchao_fp8dq"),)), spec, H100)
    assert at_load.device_bytes is not None and fused.device_bytes is not None
    assert fused.device_bytes > at_load.device_bytes
    # Offloaded, the denoiser is fused and quantized on the host: its bf16 copy is the host's peak, not the device's.
    offloaded = predict(flux, _fused("torchao_fp8dq", offload="model"), spec, H100)
    plain_offloaded = predict(
        flux, TrialConfig(quantization=(("transformer", "torchao_fp8dq"),), offload="model"), spec, H100
    )
    assert offloaded.device_terms is not None and offloaded.host_terms is not None
    assert plain_offloaded.host_bytes is not None and offloaded.host_bytes is not None
    assert offloaded.host_bytes > plain_offloaded.host_bytes
    assert offloaded.host_terms.weights >= transformer * (1 + FUSED_QKV_SHARE)
    assert "unquantized" not in offloaded.detail
    # int4 quantizes on the GPU: the pipeline loads there (device_map), the fused bf16 denoiser with it.
    int4 = predict(flux, _fused("torchao_int4wo", offload="model"), spec, H100)
    assert int4.device_terms is not None and int4.device_terms.weights >= transformer * (1 + FUSED_QKV_SHARE)
