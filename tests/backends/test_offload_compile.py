"""Offloading and compilation dispatch: what is refused, and which diffusers call each knob makes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import ModelInfo
from qco_tune.measure.backends.apply import apply_config
from qco_tune.measure.backends.compile import apply_compile, find_denoiser
from qco_tune.measure.backends.offload import apply_offload, group_offload_kwargs


class _Recorder:
    """A stand-in pipeline or model that records the methods called on it."""

    def __init__(self, **attrs: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.__dict__.update(attrs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.calls.append((name, kwargs))


@pytest.mark.parametrize("offload", ["model", "sequential", "group_block", "group_leaf"])
def test_offloading_is_refused_on_cpu(offload: str) -> None:
    with pytest.raises(ValueError, match=f"offload={offload} needs a CUDA device"):
        apply_offload(_Recorder(), TrialConfig(offload=offload), "cpu")  # type: ignore[arg-type]


def test_no_offload_moves_the_pipeline() -> None:
    pipe = _Recorder()
    apply_offload(pipe, TrialConfig(), "cpu")
    assert pipe.calls == [("to", {})]


def test_group_offload_arguments_follow_the_config() -> None:
    block = group_offload_kwargs(TrialConfig(offload="group_block", blocks_per_group=2, non_blocking=True), "cuda")
    assert block["offload_type"] == "block_level" and block["num_blocks_per_group"] == 2
    assert block["onload_device"] == torch.device("cuda") and block["offload_device"] == torch.device("cpu")
    assert block["non_blocking"] and not block["use_stream"]
    leaf = TrialConfig(offload="group_leaf", use_stream=True, record_stream=True, low_cpu_mem_usage=True)
    kwargs = group_offload_kwargs(leaf, "cuda")
    assert kwargs["offload_type"] == "leaf_level" and kwargs["num_blocks_per_group"] is None
    assert kwargs["use_stream"] and kwargs["record_stream"] and kwargs["low_cpu_mem_usage"]


@pytest.mark.parametrize(("scope", "method"), [("regional", "compile_repeated_blocks"), ("full", "compile")])
def test_compile_calls_the_denoiser(scope: str, method: str) -> None:
    transformer = _Recorder(_repeated_blocks=["Block"])
    config = TrialConfig(compile=scope, compile_mode="max-autotune-no-cudagraphs", fullgraph=True)  # type: ignore[arg-type]
    apply_compile(_Recorder(transformer=transformer), config)
    assert transformer.calls == [(method, {"mode": "max-autotune-no-cudagraphs", "fullgraph": True})]


def test_regional_compile_needs_repeated_blocks() -> None:
    with pytest.raises(ValueError, match="declares no repeated blocks"):
        apply_compile(_Recorder(unet=_Recorder(_repeated_blocks=[])), TrialConfig(compile="regional"))


def test_no_compile_touches_nothing() -> None:
    transformer = _Recorder()
    apply_compile(_Recorder(transformer=transformer), TrialConfig())
    assert transformer.calls == []


def test_find_denoiser() -> None:
    assert find_denoiser(_Recorder(transformer=None, unet=object())) == "unet"
    with pytest.raises(ValueError, match="no denoiser"):
        find_denoiser(_Recorder(transformer=None, unet=None))


def test_apply_config_offloads_before_compiling() -> None:
    order: list[str] = []
    transformer = _Recorder(_repeated_blocks=["Block"])
    transformer.compile_repeated_blocks = lambda **kw: order.append("compile")
    pipe = _Recorder(transformer=transformer, to=lambda *a, **kw: order.append("offload"))
    apply_config(pipe, TrialConfig(compile="regional"), "cpu")
    assert order == ["offload", "compile"]


@pytest.mark.slow
def test_regional_compile_runs_the_tiny_pipeline_on_cpu(tiny_model: ModelInfo, qco_cache_dir: Path) -> None:
    """Real inductor compilation of the two tiny blocks (tens of seconds cold, seconds with a warm cache)."""
    from qco_tune.measure.backends.models import load_pipeline

    def run(config: TrialConfig) -> np.ndarray:
        pipe = load_pipeline(tiny_model, config, "float32", "cpu", qco_cache_dir)
        apply_config(pipe, config, "cpu")
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(0)
        kwargs = {"height": 64, "width": 64, "num_inference_steps": 2, "max_sequence_length": 32}
        return pipe("a photo", generator=generator, output_type="np", **kwargs).images  # type: ignore[no-any-return]

    eager = run(TrialConfig())
    compiled = run(TrialConfig(compile="regional"))
    np.testing.assert_allclose(compiled, eager, atol=2e-3)


# -- placement per component ----------------------------------------------------------------------------------


def test_placement_per_component_is_refused_on_cpu() -> None:
    config = TrialConfig(placement=(("text_encoder_2", "released"),))
    with pytest.raises(ValueError, match="placement bf16 · text_encoder_2:released needs a CUDA device"):
        apply_offload(_Recorder(), config, "cpu")  # type: ignore[arg-type]


def test_placed_one_by_one_the_tiny_pipeline_runs_and_releases_its_text_encoders(
    tiny_flux_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real hooks on the CPU (where they move nothing): the text encoders are moved off as the
    transformer starts, the model-offloaded VAE as the next call's first encoder starts, and the
    images equal those of the resident pipeline."""
    import accelerate.hooks
    import diffusers

    from qco_tune.calls.placement import placement_steps
    from qco_tune.measure.backends.offload import module_roles, place_components

    events: list[str] = []
    real_offload = accelerate.hooks.UserCpuOffloadHook.offload

    def offload(self: Any) -> None:
        events.append(f"off {type(self.model).__name__}")
        real_offload(self)

    monkeypatch.setattr(accelerate.hooks.UserCpuOffloadHook, "offload", offload)
    config = TrialConfig(placement=(("text_encoder", "released"), ("text_encoder_2", "released"), ("vae", "model")))

    def images(placed: bool) -> np.ndarray:
        pipe = diffusers.DiffusionPipeline.from_pretrained(str(tiny_flux_path), dtype=torch.float32)
        if placed:
            place_components(pipe, placement_steps(config, module_roles(pipe)), config, "cpu")
            pipe.transformer.register_forward_pre_hook(lambda *_: events.append("transformer"))
            pipe.text_encoder.register_forward_pre_hook(lambda *_: events.append("text_encoder"))
        kwargs = {"height": 64, "width": 64, "num_inference_steps": 2, "max_sequence_length": 32, "output_type": "np"}
        out = [pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images for _ in range(2)]
        return np.concatenate(out)

    np.testing.assert_array_equal(images(placed=True), images(placed=False))
    # Per call: the VAE is moved off as the first encoder starts, both encoders as each denoising step starts.
    step = ["off CLIPTextModel", "off T5EncoderModel", "transformer"]
    assert events == (["off AutoencoderKL", "text_encoder", *step, *step]) * 2
