"""The new knobs on the CPU: the tiny pipeline through the real trial child (quanto int4 and float8,
torchao float8 weight-only and int8 dynamic, layerwise casting, VAE tiling, slicing and channels-last),
what ``apply_config`` does to a loaded pipeline, the probe, and the VAE class tables against diffusers.

The children run concurrently (module fixture): each spends most of its time importing torch.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_helpers import TINY_WORKLOAD, ChildProcess, ChildRun

import qco_tune
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import ModelInfo, TrialRequest
from qco_tune.search.knob_checks import VAE_2D_CLASSES, VAE_TILING_CLASSES

torch = pytest.importorskip("torch")

SETTINGS = TrialConfig(
    layerwise_casting="float8_e4m3fn", vae_tiling=True, vae_slicing=True, vae_channels_last=True, tf32=True
)
CONFIGS = {
    "reference": TrialConfig(),
    "settings": SETTINGS,
    # Every new backend on the denoiser once, and on a text encoder once.
    "quanto_int4": TrialConfig(quantization=(("transformer", "quanto_int4"), ("text_encoder", "torchao_int8dq"))),
    "torchao_fp8wo": TrialConfig(quantization=(("transformer", "torchao_fp8wo"), ("text_encoder_2", "quanto_fp8"))),
    "torchao_int8dq": TrialConfig(
        quantization=(
            ("transformer", "torchao_int8dq"),
            ("text_encoder", "quanto_int4"),
            ("text_encoder_2", "torchao_fp8wo"),
        )
    ),
    "quanto_fp8": TrialConfig(quantization=(("transformer", "quanto_fp8"),)),
}


@pytest.fixture(scope="module")
def runs(
    tiny_model: ModelInfo, qco_cache_dir: Path, tiny_flux_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ChildRun]:
    """One CPU trial of the tiny preset per configuration; the reference first, the others at once."""
    reference = tmp_path_factory.mktemp("reference")

    def start(name: str) -> ChildProcess:
        request = TrialRequest(
            model=tiny_model,
            config=CONFIGS[name],
            workload=TINY_WORKLOAD,
            dtype="bfloat16",
            device="cpu",
            timed_calls=2,
            max_timed_calls=2,
            warmup_calls=0,
            cache_dir=str(qco_cache_dir),
            reference_dir=str(reference),
            save_reference=name == "reference",
        )
        return ChildProcess(request, tmp_path_factory.mktemp(name))

    done = {"reference": start("reference").finish()}
    started = {name: start(name) for name in CONFIGS if name != "reference"}
    return done | {name: child.finish() for name, child in started.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_knob_runs_a_trial_on_the_cpu(runs: dict[str, ChildRun], name: str) -> None:
    proc, m = runs[name]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert m is not None and m.status == "ok", (m.reason if m else None, m.output_tail if m else proc.stderr[-2000:])
    assert m.latency_s is not None and m.latency_s > 0 and m.step_time_s is not None
    output = np.load(m.extra["output_path"])
    assert output.shape == (1, 64, 64, 3) and np.isfinite(output).all()
    assert m.psnr_db is not None and m.latent_cosine is not None
    if name == "reference":
        assert m.psnr_db == math.inf
    else:
        # Lower precision somewhere changes the output, a little: a knob that did nothing would be inf.
        assert 20 < m.psnr_db < math.inf and m.latent_cosine > 0.99, (m.psnr_db, m.latent_cosine)


# -- what apply_config does to a loaded pipeline -------------------------------------------------------------


def _linear_weights(module: Any) -> list[Any]:
    return [m.weight for m in module.modules() if isinstance(m, torch.nn.Linear)]


def _convs(module: Any) -> list[Any]:
    return [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


def test_from_pretrained_applies_every_setting(qco_cache_dir: Path, tiny_flux_path: Path) -> None:
    before = torch.get_float32_matmul_precision()
    try:
        pipe = qco_tune.from_pretrained("tiny-flux", SETTINGS, device="cpu", cache_dir=qco_cache_dir)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    stored = {w.dtype for w in _linear_weights(pipe.transformer)}
    assert torch.float8_e4m3fn in stored  # layerwise casting stores the blocks' weights in float8
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _convs(pipe.vae) if w.dim() == 4)
    assert all(w.dtype != torch.float8_e4m3fn for w in _linear_weights(pipe.text_encoder_2))  # the denoiser only
    kwargs = dict(prompt="a cat", height=64, width=64, num_inference_steps=1, max_sequence_length=32, output_type="np")
    image = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0)).images
    assert np.isfinite(image).all()


def test_apply_sets_the_attention_backend(tiny_flux_path: Path) -> None:
    import diffusers
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    pipe = diffusers.DiffusionPipeline.from_pretrained(str(tiny_flux_path), dtype=torch.bfloat16)
    active = _AttentionBackendRegistry._active_backend
    try:
        qco_tune.apply(pipe, {"attention_backend": "_native_efficient", "vae_tiling": True}, device="cpu")
        processors = [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")]
        assert processors and all(getattr(p, "_attention_backend", None) == "_native_efficient" for p in processors)
        assert pipe.vae.use_tiling and not pipe.vae.use_slicing
        assert _AttentionBackendRegistry._active_backend == "_native_efficient"  # diffusers' process-wide default too
    finally:
        pipe.transformer.reset_attention_backend()
        _AttentionBackendRegistry.set_active_backend(active)  # which reset_attention_backend leaves as it is


def test_a_setting_the_pipeline_cannot_take_is_refused_in_one_line(tiny_flux_path: Path) -> None:
    import diffusers

    pipe = diffusers.DiffusionPipeline.from_pretrained(str(tiny_flux_path), dtype=torch.bfloat16)
    pipe.vae = None
    with pytest.raises(ValueError, match=r"^enable_tiling: FluxPipeline has no VAE$"):
        qco_tune.apply(pipe, {"vae_tiling": True}, device="cpu")


# -- the probe and the tables -------------------------------------------------------------------------------


def test_the_probe_on_a_cpu_offers_native_attention_and_runs_the_new_kernels() -> None:
    from qco_tune.measure.backends.probe import attention_backends, quantization_smoke

    assert attention_backends(cuda=False) == (("native",), {})
    assert quantization_smoke(cuda=False, backends=("torchao", "quanto")) == {}  # all but int4 run on the CPU
    assert quantization_smoke(cuda=False, backends=()) == {}  # nothing installed: nothing to probe


def test_the_probe_reports_a_failing_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from qco_tune.measure.backends import probe

    def broken(layer: object, backend: str, entry: object) -> None:
        if backend == "quanto_fp8":
            raise RuntimeError("no float8 kernel here\nsecond line")
        return real(layer, backend, entry)

    real = probe._quantize_layer
    monkeypatch.setattr(probe, "_quantize_layer", broken)
    assert probe.quantization_smoke(cuda=False, backends=("quanto",)) == {
        "quanto_fp8": "RuntimeError: no float8 kernel here"
    }


def test_a_slow_probe_says_where_its_time_went(monkeypatch: pytest.MonkeyPatch) -> None:
    from qco_tune.measure import runner

    monkeypatch.setattr(runner, "SLOW_PROBE_S", 0.0)  # every probe counts as slow here
    lines: list[str] = []
    caps = runner.probe_capabilities(on_slow=lines.append)  # the real child
    assert caps.cuda is False and "native" in caps.attention_backends
    (line,) = lines
    assert line.startswith("probing this machine took ")
    stages = ("importing torch", "importing the quantization libraries", "checking the attention backends")
    assert any(f"s of it {stage}" in line for stage in (*stages, "checking the quantization kernels"))


def test_the_vae_tables_match_the_installed_diffusers() -> None:
    import diffusers

    for name in sorted(VAE_TILING_CLASSES):
        source = inspect.getsource(getattr(diffusers, name))
        assert "self.use_tiling" in source and "self.use_slicing" in source, name
    for name in sorted(VAE_2D_CLASSES):
        module_source = inspect.getsource(inspect.getmodule(getattr(diffusers, name)))
        assert "Conv3d" not in module_source, name
    # The VAEs of the presets are covered.
    assert {"AutoencoderKL", "AutoencoderKLWan"} <= VAE_TILING_CLASSES and "AutoencoderKL" in VAE_2D_CLASSES


def test_the_attention_backends_exist_in_the_installed_diffusers() -> None:
    from diffusers.models.attention_dispatch import AttentionBackendName

    from qco_tune.core.config import ATTENTION_BACKENDS
    from qco_tune.search.knob_checks import HALF_ONLY_ATTENTION

    values = {b.value for b in AttentionBackendName}
    assert set(ATTENTION_BACKENDS) <= values
    assert set(ATTENTION_BACKENDS) >= HALF_ONLY_ATTENTION
