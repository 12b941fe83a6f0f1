"""Every knob of the space on a CUDA GPU, on a reduced FLUX.1-dev pipeline (skipped without CUDA).

The pipeline: FLUX.1-dev's transformer at its real width (3072) with one double-stream and one
single-stream block, CLIP-L and T5-XXL at their real widths with one layer each, the real VAE, and
tokenizers built locally (about 1.1 B parameters, 2.2 GB in bf16). It is built once per session on
the GPU and saved to a temporary folder, which every case then loads as a trial does.

Each case runs through the trial child's own code (``qco_tune.measure.backends.child.measure``: the quantized
``load_pipeline``, ``apply_config``, the first call, a warm-up and the timed calls under the memory
trackers), in this process, so that the session pays the imports once; process-wide settings a case
changes (Dynamo and Inductor config, the float32 matmul precision, diffusers' active attention backend)
are restored after it. A knob the space removes on this GPU (probed as a study would) is skipped with
the space's reason. Checked: the trial finishes, the output is finite and not constant, the per-step
time fits the call's latency, the memory figures are consistent and, where the knob exists to save
memory, lower than the unoptimised reference's; the deviation from the reference stays moderate.

The combinations the space excludes because they failed in practice are checked to still fail: a rule
whose combination now runs should be dropped. Compile cases use mode ``default`` (and one
``reduce-overhead``); the autotuning modes run only with ``QCO_GPU_AUTOTUNE=1``. Expected runtime on
an H100: a few minutes, most of it in the compile cases' cold starts. ``QCO_GPU_CASES=DIR`` appends
each case's measurement to ``DIR/cases.jsonl`` as it finishes (status, reason, output tail, figures).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qco_tune.core.config import ATTENTION_BACKENDS, QUANT_BACKENDS, TrialConfig
from qco_tune.core.records import Capabilities, Measurement, ModelInfo, TrialRequest
from qco_tune.core.studyspec import SpaceRestriction, StudySpec, Workload
from qco_tune.search.rules import RULES
from qco_tune.search.space import SearchSpace

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

WORKLOAD = Workload(height=768, width=768, steps=4, guidance=3.5, max_sequence_length=128)
"""Above the VAE's 512-pixel tiles, so that tiling really tiles; four steps time three step intervals."""
DEPTH = {
    "transformer": {"num_layers": 1, "num_single_layers": 1},  # one double-stream and one single-stream block
    "text_encoder": {"num_hidden_layers": 1},  # CLIP-L
    "text_encoder_2": {"num_layers": 1},  # T5-XXL
}
EVERYTHING = SpaceRestriction(vae_slicing=(False, True), tf32=(False, True))
"""Every knob, including the two a bfloat16 study leaves out by default."""
COMPONENTS = ("transformer", "text_encoder", "text_encoder_2")
AUTOTUNE = os.environ.get("QCO_GPU_AUTOTUNE") == "1"


def _quantized(backend: str) -> TrialConfig:
    return TrialConfig(quantization=tuple((c, backend) for c in COMPONENTS))  # type: ignore[misc]


# (id, configuration, saves memory: its allocator peak must be below the reference's)
CASES: list[tuple[str, TrialConfig, bool]] = [
    # quantization: every backend on the denoiser and both text encoders
    *((f"quant-{b}", _quantized(b), True) for b in QUANT_BACKENDS if b != "none"),
    # compilation
    ("compile-regional", TrialConfig(compile="regional"), False),
    ("compile-full-fullgraph", TrialConfig(compile="full", fullgraph=True), False),
    ("compile-regional-reduce-overhead", TrialConfig(compile="regional", compile_mode="reduce-overhead"), False),
    *(
        (f"compile-regional-{mode}", TrialConfig(compile="regional", compile_mode=mode), False)  # type: ignore[arg-type]
        for mode in ("max-autotune-no-cudagraphs", "max-autotune")
        if AUTOTUNE
    ),
    # offloading
    ("offload-model", TrialConfig(offload="model"), True),
    ("offload-sequential", TrialConfig(offload="sequential"), True),
    ("offload-group-block-2", TrialConfig(offload="group_block", blocks_per_group=2), True),
    (
        "offload-group-block-stream",
        TrialConfig(offload="group_block", use_stream=True, record_stream=True, low_cpu_mem_usage=True),
        True,
    ),
    ("offload-group-leaf-stream", TrialConfig(offload="group_leaf", use_stream=True, non_blocking=True), True),
    # settings
    ("layerwise-casting", TrialConfig(layerwise_casting="float8_e4m3fn"), True),
    *((f"attention-{a}", TrialConfig(attention_backend=a), False) for a in ATTENTION_BACKENDS[1:]),  # type: ignore[arg-type]
    ("vae-tiling", TrialConfig(vae_tiling=True), True),
    ("vae-slicing", TrialConfig(vae_slicing=True), False),
    ("vae-channels-last", TrialConfig(vae_channels_last=True), False),
    ("tf32", TrialConfig(tf32=True), False),
    # combinations the space allows, which nothing has observed yet
    ("layerwise-regional-compile", TrialConfig(layerwise_casting="float8_e4m3fn", compile="regional"), True),
    (
        "layerwise-group-leaf-stream",
        TrialConfig(layerwise_casting="float8_e4m3fn", offload="group_leaf", use_stream=True),
        True,
    ),
    ("torchao-fp8dq-regional-compile", dataclasses.replace(_quantized("torchao_fp8dq"), compile="regional"), True),
    ("torchao-int4-model-offload", dataclasses.replace(_quantized("torchao_int4wo"), offload="model"), True),
    ("torchao-fp8wo-group-leaf", dataclasses.replace(_quantized("torchao_fp8wo"), offload="group_leaf"), True),
    ("cudnn-attention-regional-compile", TrialConfig(attention_backend="_native_cudnn", compile="regional"), False),
    ("vae-tiling-model-offload", TrialConfig(vae_tiling=True, offload="model"), True),
    # CUDA graphs beside what changes weights between calls without offloading (no rule until observed)
    (
        "layerwise-regional-reduce-overhead",
        TrialConfig(layerwise_casting="float8_e4m3fn", compile="regional", compile_mode="reduce-overhead"),
        True,
    ),
    (
        "bnb-nf4-regional-reduce-overhead",
        dataclasses.replace(_quantized("bnb_nf4"), compile="regional", compile_mode="reduce-overhead"),
        True,
    ),
    # the fast path (huggingface/flux-fast's knobs), alone and together
    ("fused-qkv", TrialConfig(fuse_qkv=True), False),
    ("denoiser-channels-last", TrialConfig(denoiser_channels_last=True), False),
    ("inductor-flux-fast-regional", TrialConfig(compile="regional", inductor_profile="flux-fast"), False),
    ("fused-qkv-layerwise-casting", TrialConfig(fuse_qkv=True, layerwise_casting="float8_e4m3fn"), False),
    ("fused-qkv-group-leaf-stream", TrialConfig(fuse_qkv=True, offload="group_leaf", use_stream=True), True),
    # A torchao denoiser loads unquantized, is fused, then quantized with quantize_ (flux-fast's order): the
    # unquantized fused denoiser is whole on the device first, so none of these is below the reference's peak.
    # float8 dynamic and int4 cannot run on the CPU (tests/backends/test_fused_quantized_cpu.py runs the others).
    *(
        (f"fused-qkv-{backend}", TrialConfig(quantization=(("transformer", backend),), fuse_qkv=True), False)  # type: ignore[arg-type]
        for backend in ("torchao_fp8dq", "torchao_int4wo", "torchao_int8wo", "torchao_fp8wo")
    ),
    (
        "fused-qkv-torchao_fp8dq-model-offload",
        TrialConfig(quantization=(("transformer", "torchao_fp8dq"),), fuse_qkv=True, offload="model"),
        True,
    ),
    (
        "fast-path-regional-reduce-overhead",
        TrialConfig(
            fuse_qkv=True,
            denoiser_channels_last=True,
            attention_backend="_native_cudnn",
            compile="regional",
            compile_mode="reduce-overhead",
            inductor_profile="flux-fast",
        ),
        False,
    ),
    (
        "flux-fast-fp8dq-fused-regional",
        TrialConfig(
            quantization=(("transformer", "torchao_fp8dq"),),
            fuse_qkv=True,
            compile="regional",
            inductor_profile="flux-fast",
        ),
        False,
    ),
    (
        "fast-path-full-fp8-text-encoder",
        TrialConfig(
            quantization=(("text_encoder_2", "torchao_fp8dq"),),
            fuse_qkv=True,
            denoiser_channels_last=True,
            compile="full",
            inductor_profile="flux-fast",
        ),
        False,
    ),
]

EXCLUDED: list[tuple[str, TrialConfig, str]] = [
    # Fusing concatenates weight.data of the packed projections. (quanto's fused projection runs, dequantized:
    # tests/backends/test_fast_path_cpu.py checks that on the CPU.)
    (
        "fused-qkv-bnb_nf4",
        TrialConfig(quantization=(("transformer", "bnb_nf4"),), fuse_qkv=True),
        "fused_qkv_with_quantized_denoiser",
    ),
    # The rule was observed with quanto int8; int4 and float8 weights are the same kind of tensor subclass.
    (
        "quanto-int4-group-block",
        TrialConfig(quantization=(("transformer", "quanto_int4"),), offload="group_block"),
        "group_offload_with_quanto",
    ),
    (
        "quanto-fp8-group-leaf",
        TrialConfig(quantization=(("transformer", "quanto_fp8"),), offload="group_leaf"),
        "group_offload_with_quanto",
    ),
]


# -- the pipeline, the machine and the reference ------------------------------------------------------------


@pytest.fixture(scope="session")
def reduced_flux(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    """FLUX.1-dev at its real widths with one block or layer per stack, saved once as a local folder."""
    from qco_tune.core.modelref import resolve_model
    from qco_tune.core.presets import get_preset
    from qco_tune.measure.backends.presets_build import build_pipeline

    blueprint = get_preset("flux.1-dev").blueprint
    models = tuple(
        dataclasses.replace(part, config={**part.config, **DEPTH.get(part.name, {})}) for part in blueprint.models
    )
    pipe = build_pipeline(dataclasses.replace(blueprint, models=models), "cuda", "bfloat16")
    assert pipe.transformer.inner_dim == 3072 and pipe.text_encoder_2.config.d_model == 4096
    folder = tmp_path_factory.mktemp("reduced-flux")
    pipe.save_pretrained(folder)
    del pipe
    gc.collect()
    torch.cuda.empty_cache()
    return resolve_model(str(folder), "real")


@pytest.fixture(scope="session")
def caps() -> Capabilities:
    """What this machine can run, probed as a study probes it (in this process)."""
    from qco_tune.measure.backends.probe import probe

    return probe()


@pytest.fixture(scope="session")
def space(reduced_flux: ModelInfo, caps: Capabilities) -> SearchSpace:
    spec = StudySpec(name="knobs", model=reduced_flux.reference, weights="real", workload=WORKLOAD, space=EVERYTHING)
    return SearchSpace.build(spec, reduced_flux, caps)


@pytest.fixture(autouse=True)
def _process_settings_restored() -> Iterator[None]:
    """Undo what a case changed process-wide, and free its memory, before the next one."""
    import torch._dynamo
    import torch._inductor.config
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    dynamo = torch._dynamo.config.get_config_copy()
    inductor = torch._inductor.config.get_config_copy()
    precision = torch.get_float32_matmul_precision()
    attention = _AttentionBackendRegistry._active_backend
    yield
    for config, saved in ((torch._dynamo.config, dynamo), (torch._inductor.config, inductor)):
        for key, value in saved.items():
            if getattr(config, key, value) != value:
                setattr(config, key, value)
    torch.set_float32_matmul_precision(precision)
    _AttentionBackendRegistry.set_active_backend(attention)
    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def _measure(
    model: ModelInfo, config: TrialConfig, folder: Path, reference: Path, save: bool = False, case: str = ""
) -> Measurement:
    """One trial, as the child runs it, in this process."""
    from qco_tune.measure.backends.child import measure
    from qco_tune.measure.backends.measure import nvml_handle, nvml_used_bytes

    request = TrialRequest(
        model=model,
        config=config,
        workload=WORKLOAD,
        dtype="bfloat16",
        device="cuda",
        timed_calls=2,
        max_timed_calls=3,
        warmup_calls=1,
        cache_dir=str(folder),
        reference_dir=str(reference),
        save_reference=save,
    )
    handle = nvml_handle(0)
    m = measure(request, folder / "result.json", nvml_used_bytes(handle), handle)
    _keep(case, config, m)
    return m


def _keep(case: str, config: TrialConfig, m: Measurement) -> None:
    """With ``QCO_GPU_CASES=DIR``, each case's measurement is written there as it finishes, so a run cut
    short by a time limit still says what each finished case measured and why a failing one failed."""
    folder = os.environ.get("QCO_GPU_CASES")
    if not folder:
        return
    import json

    from qco_tune.loop.summary import strict_json

    path = Path(folder) / "cases.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        entry = {"case": case, "configuration": config.describe(), **m.to_dict()}
        out.write(json.dumps(strict_json(entry), default=str) + "\n")


@pytest.fixture(scope="session")
def reference(reduced_flux: ModelInfo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Measurement]:
    """The unoptimised reference: its output is what every case's fidelity is measured against."""
    folder, output = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("reference-output")
    m = _measure(reduced_flux, TrialConfig(), folder, output, save=True, case="reference")
    _assert_plausible(m)
    assert m.psnr_db == math.inf
    return output, m


def _assert_plausible(m: Measurement) -> None:
    import numpy as np

    assert m.status == "ok", (m.reason, m.output_tail)
    output = np.load(m.extra["output_path"])
    assert output.shape == (1, WORKLOAD.height, WORKLOAD.width, 3)
    assert np.isfinite(output).all() and output.std() > 0  # neither NaN nor a constant picture
    assert m.latency_s is not None and m.latency_s > 0 and m.first_call_s is not None and m.first_call_s > 0
    assert m.step_time_s is not None and 0 < m.step_time_s * (WORKLOAD.steps - 1) < m.latency_s
    assert m.peak_allocated_bytes is not None and m.peak_reserved_bytes is not None
    assert 0 < m.peak_allocated_bytes <= m.peak_reserved_bytes
    assert m.peak_host_bytes is not None and m.peak_host_bytes > 0


# -- the cases ----------------------------------------------------------------------------------------------


def test_the_probe_finds_native_attention_and_says_why_others_are_missing(caps: Capabilities) -> None:
    assert caps.cuda and "native" in caps.attention_backends
    unusable = dict(caps.unusable)
    for name in ATTENTION_BACKENDS[1:]:
        assert (name in caps.attention_backends) != bool(unusable.get(f"attention_backend={name}")), name
    print(f"usable attention backends: {caps.attention_backends}; unusable: {unusable}")


@pytest.mark.parametrize(("name", "config", "saves_memory"), CASES, ids=[c[0] for c in CASES])
def test_knob(
    name: str,
    config: TrialConfig,
    saves_memory: bool,
    reduced_flux: ModelInfo,
    space: SearchSpace,
    reference: tuple[Path, Measurement],
    tmp_path: Path,
) -> None:
    violations = space.violations(config)
    if violations:
        pytest.skip("removed from the space here: " + "; ".join(violations))
    reference_dir, ref = reference
    m = _measure(reduced_flux, config, tmp_path, reference_dir, case=name)
    _assert_plausible(m)
    assert m.peak_allocated_bytes is not None and ref.peak_allocated_bytes is not None
    if saves_memory:
        assert m.peak_allocated_bytes < ref.peak_allocated_bytes, (m.peak_allocated_bytes, ref.peak_allocated_bytes)
    else:
        assert m.peak_allocated_bytes < 1.5 * ref.peak_allocated_bytes + 2**28
    if config.compile != "none":
        assert m.first_call_s is not None and m.latency_s is not None and m.first_call_s > m.latency_s  # the cold start
    # Random weights: this measures numerical deviation, which must stay moderate for any knob.
    assert "fidelity_error" not in m.extra, m.extra["fidelity_error"]
    assert m.psnr_db is not None and m.psnr_db > 10 and m.latent_cosine is not None and m.latent_cosine > 0.8
    print(
        f"{name}: {m.latency_s:.3f} s, {m.step_time_s:.4f} s/step, first call {m.first_call_s:.1f} s, "
        f"allocated {m.peak_allocated_bytes / 2**30:.2f} GiB (reference {ref.peak_allocated_bytes / 2**30:.2f}), "
        f"PSNR {m.psnr_db:.1f} dB"
    )


@pytest.mark.parametrize(("name", "config", "rule"), EXCLUDED, ids=[c[0] for c in EXCLUDED])
def test_an_excluded_combination_still_fails(
    name: str, config: TrialConfig, rule: str, reduced_flux: ModelInfo, space: SearchSpace, tmp_path: Path
) -> None:
    """The space excludes it (rule ``rule``); if it runs now, the rule has become guesswork: drop it."""
    assert any(r.name == rule and r.broken(config, space) for r in RULES)
    m = _measure(reduced_flux, config, tmp_path, tmp_path / "no-reference", case=name)
    assert m.status in ("error", "oom"), f"{name} ran ({m.latency_s} s): rule {rule} no longer holds for it"
    print(f"{name}: {m.reason}")
