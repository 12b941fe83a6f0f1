"""Quantization configs: the right library's class per component, clear refusals, real CPU loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import ComponentInfo, ModelInfo
from qco_tune.measure.backends.quantization import build_quantization_config

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")


def test_nothing_quantized_gives_none(tiny_model: ModelInfo) -> None:
    assert build_quantization_config(TrialConfig(), tiny_model, "bfloat16") is None


def test_denoiser_gets_diffusers_and_text_encoder_transformers_classes(tiny_model: ModelInfo) -> None:
    import diffusers
    import transformers

    config = TrialConfig(quantization=(("transformer", "torchao_int8wo"), ("text_encoder_2", "quanto_int8")))
    mapping = build_quantization_config(config, tiny_model, "bfloat16").quant_mapping
    assert set(mapping) == {"transformer", "text_encoder_2"}
    assert isinstance(mapping["transformer"], diffusers.TorchAoConfig)
    assert type(mapping["text_encoder_2"]) is transformers.QuantoConfig
    assert mapping["text_encoder_2"].weights == "int8"


def test_unknown_component_is_named(tiny_model: ModelInfo) -> None:
    with pytest.raises(ValueError, match=r"'unet'.*no such component"):
        build_quantization_config(TrialConfig(quantization=(("unet", "quanto_int8"),)), tiny_model, "bfloat16")


def test_component_without_weights_is_refused(tiny_model: ModelInfo) -> None:
    model = ModelInfo(
        reference="x",
        source="local",
        pipeline_class="FluxPipeline",
        components=(*tiny_model.components, ComponentInfo("safety", "other", "Checker")),
        path="/nonexistent",
    )
    with pytest.raises(ValueError, match="cannot quantize 'safety'"):
        build_quantization_config(TrialConfig(quantization=(("safety", "quanto_int8"),)), model, "bfloat16")


def test_unknown_dtype_is_refused(tiny_model: ModelInfo) -> None:
    with pytest.raises(ValueError, match="dtype"):
        build_quantization_config(TrialConfig(), tiny_model, "int3")


@no_cuda
@pytest.mark.parametrize("backend", ["bnb_nf4", "bnb_fp4", "bnb_int8", "torchao_fp8dq"])
def test_gpu_only_backends_are_refused_on_cpu(tiny_model: ModelInfo, backend: str) -> None:
    config = TrialConfig(quantization=(("transformer", backend),))
    with pytest.raises(ValueError, match=f"transformer: {backend} needs a CUDA GPU"):
        build_quantization_config(config, tiny_model, "bfloat16")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torchao_int8wo", "quanto_int8"])
def test_tiny_pipeline_loads_quantized_on_cpu(
    tiny_model: ModelInfo, qco_cache_dir: Path, tiny_flux_path: Path, backend: str
) -> None:
    from qco_tune.measure.backends.models import load_pipeline

    config = TrialConfig(quantization=(("transformer", backend), ("text_encoder_2", backend)))
    pipe = load_pipeline(tiny_model, config, "bfloat16", "cpu", qco_cache_dir)
    assert _is_quantized(pipe.transformer.transformer_blocks[0].ff.net[2], backend)
    # (T5's ``wo`` is in transformers' keep-in-full-precision list, which quanto honours and torchao does not.)
    assert _is_quantized(pipe.text_encoder_2.encoder.block[0].layer[1].DenseReluDense.wi_0, backend)
    assert not _is_quantized(pipe.text_encoder.encoder.layers[0].mlp.fc1, backend)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a photo", height=64, width=64, num_inference_steps=2, max_sequence_length=32, output_type="np").images
    assert np.isfinite(out).all()


def _is_quantized(linear: torch.nn.Module, backend: str) -> bool:
    if backend == "quanto_int8":
        from optimum.quanto import QModuleMixin

        return isinstance(linear, QModuleMixin)
    return type(linear.weight).__module__.startswith("torchao")
