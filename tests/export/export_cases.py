"""The configurations the golden files cover: the diffusers guide's recipes, then the other knobs."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fake_machines import H100

from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import ModelInfo
from qco_tune.core.studyspec import SpaceRestriction, StudySpec, Workload
from qco_tune.export.plan import ExportHeader
from qco_tune.search.space import SearchSpace

EVERYTHING = SpaceRestriction(vae_slicing=(False, True), tf32=(False, True))
"""The whole space: with the settings a bfloat16 study leaves out by default."""


@functools.cache
def whole_space(preset: str, dtype: str = "bfloat16") -> SearchSpace:
    """The space of every knob of ``preset`` on an H100 (millions of configurations for FLUX.1: walk it
    lazily with ``iter_configs``, or draw from it with ``random_config``)."""
    model = get_preset(preset).model_info()
    spec = StudySpec(name="all", model=preset, dtype=dtype, space=EVERYTHING)  # type: ignore[arg-type]
    return SearchSpace.build(spec, model, H100)


class _RandomTrial:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.rng.choice(list(choices))


def random_config(preset: str, seed: int, dtype: str = "bfloat16") -> TrialConfig:
    """A valid configuration of ``preset``'s whole space, drawn at random (the first valid draw from ``seed``)."""
    space, rng = whole_space(preset, dtype), random.Random(seed)
    while True:
        config = space.suggest(_RandomTrial(rng)).canonical()
        if space.is_valid(config):
            return config


def sample_space(preset: str, n: int, seed: int = 0) -> list[TrialConfig]:
    """``n`` seeded random valid configurations of ``preset``'s whole space."""
    return [random_config(preset, seed * 1_000_003 + i) for i in range(n)]


GUIDE_FLUX_PROMPT = (
    "cinematic film still of a cat sipping a margarita in a pool in Palm Springs, California, highly detailed, "
    "high budget hollywood movie, cinemascope, moody, epic, gorgeous, film grain"
)
GUIDE_WAN_PROMPT = """
The camera rushes from far to near in a low-angle shot, 
revealing a white ferret on a log. It plays, leaps into the water, and emerges, as the camera zooms in 
for a close-up. Water splashes berry bushes nearby, while moss, snow, and leaves blanket the ground. 
Birch trees and a light blue sky frame the scene, with ferns in the foreground. Side lighting casts dynamic 
shadows and warm highlights. Medium composition, front view, low angle, with depth of field.
"""  # noqa: W291 - the guide's prompt, trailing spaces included
GUIDE_WAN_NEGATIVE = """
Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, overall gray, worst quality, 
low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, 
misshapen limbs, fused fingers, still picture, messy background, three legs, many people in the background, walking backwards
"""  # noqa: E501, W291 - the guide's negative prompt

NF4_FLUX = (("transformer", "bnb_nf4"), ("text_encoder_2", "bnb_nf4"))
FLUX_WORKLOAD = Workload(prompt=GUIDE_FLUX_PROMPT, height=1024, width=1024, steps=28, guidance=3.5)
"""FluxPipeline's defaults, which the guide's calls rely on."""
WAN_WORKLOAD = Workload(
    prompt=GUIDE_WAN_PROMPT,
    negative_prompt=GUIDE_WAN_NEGATIVE,
    height=480,
    width=832,
    frames=81,
    steps=50,
    guidance=5.0,
)
"""The guide's Wan call (its height, width and steps are WanPipeline's defaults)."""
FLUX_REF = "black-forest-labs/FLUX.1-dev"
WAN_REF = "Wan-AI/Wan2.1-T2V-14B-Diffusers"


@dataclass(frozen=True)
class Case:
    name: str
    preset: str
    config: TrialConfig
    workload: Workload
    model_ref: str
    dtype: str = "bfloat16"
    header: ExportHeader | None = None
    guide: bool = False
    """A recipe of the diffusers guide "Compiling and offloading quantized models"."""
    cpu: bool = field(default=False)
    """Runs on a CPU (no bitsandbytes, offloading or float8): executed against the tiny pipeline."""
    compile_artifacts: str | None = None
    """``export --compile-artifacts``: the snippet loads a study's compile artefacts from this folder."""

    @property
    def model(self) -> ModelInfo:
        return get_preset(self.preset).model_info()


CASES = (
    Case(
        "guide_flux_quantization",
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX),
        FLUX_WORKLOAD,
        FLUX_REF,
        header=ExportHeader(
            study="flux.1-dev-16gib",
            trial=7,
            best=True,
            qco_version="0.1.0",
            latency_s=5.84,
            memory_bytes=int(16.1 * 2**30),
            budget_bytes=16 * 2**30 + 2**29,
            gpu="NVIDIA H100 80GB HBM3",
            date="2026-11-24",
            notes=("The study measured random weights of the same architecture; this loads the real model.",),
        ),
        guide=True,
    ),
    Case(
        "guide_flux_quantization_compile",
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX, compile="full", compile_mode="max-autotune", fullgraph=True),
        FLUX_WORKLOAD,
        FLUX_REF,
        guide=True,
    ),
    Case(
        "guide_flux_quantization_compile_model_offload",
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX, compile="full", offload="model"),
        FLUX_WORKLOAD,
        FLUX_REF,
        guide=True,
    ),
    Case(
        "guide_wan_group_offload",
        "wan2.1-t2v-14b",
        TrialConfig(
            quantization=(("transformer", "bnb_nf4"), ("text_encoder", "bnb_nf4")),
            compile="full",
            offload="group_leaf",
            use_stream=True,
            non_blocking=True,
        ),
        WAN_WORKLOAD,
        WAN_REF,
        guide=True,
    ),
    Case("plain_float32", "flux.1-dev", TrialConfig(), FLUX_WORKLOAD, FLUX_REF, dtype="float32", cpu=True),
    Case(
        "bf16_regional_compile",
        "flux.1-dev",
        TrialConfig(compile="regional", compile_mode="max-autotune-no-cudagraphs"),
        FLUX_WORKLOAD,
        FLUX_REF,
        cpu=True,
    ),
    Case(
        "quant_mapping_group_block_streams",
        "flux.1-dev",
        TrialConfig(
            quantization=(
                ("transformer", "torchao_fp8dq"),
                ("text_encoder", "bnb_int8"),
                ("text_encoder_2", "quanto_int8"),
            ),
            compile="regional",
            fullgraph=True,
            offload="group_block",
            blocks_per_group=2,
            use_stream=True,
            record_stream=True,
            low_cpu_mem_usage=True,
        ),
        FLUX_WORKLOAD,
        FLUX_REF,
    ),
    Case(
        "torchao_int8_quanto_int8",
        "flux.1-dev",
        TrialConfig(quantization=(("transformer", "torchao_int8wo"), ("text_encoder_2", "quanto_int8"))),
        FLUX_WORKLOAD,
        FLUX_REF,
        cpu=True,
    ),
    Case(
        "torchao_int8_sequential_offload",
        "flux.1-dev",
        TrialConfig(quantization=(("transformer", "torchao_int8wo"),), offload="sequential"),
        FLUX_WORKLOAD,
        FLUX_REF,
    ),
    Case(
        "bnb_fp4_reduce_overhead_float16",
        "flux.1-dev",
        TrialConfig(quantization=(("transformer", "bnb_fp4"),), compile="full", compile_mode="reduce-overhead"),
        FLUX_WORKLOAD,
        FLUX_REF,
        dtype="float16",
    ),
    Case(
        "bnb_int8_group_block_no_stream",
        "wan2.1-t2v-1.3b",
        TrialConfig(quantization=(("text_encoder", "bnb_int8"),), offload="group_block", blocks_per_group=4),
        WAN_WORKLOAD,
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    ),
    Case(
        "failed_trial_warning_quotes",
        "tiny-flux",
        TrialConfig(quantization=(("transformer", "quanto_int8"), ("text_encoder", "quanto_int8"))),
        Workload(prompt='a "quoted" prompt,\nwith a newline and a \\ backslash', height=64, width=64, steps=2),
        '/models/it\'s "here"/tiny-flux',
        header=ExportHeader(
            study="tiny\nimport os",
            trial=3,
            best=False,
            qco_version="0.1.0",
            latency_s=None,
            memory_bytes=None,
            gpu="CPU",
            date="2026-11-24",
            warning="trial 3 failed (error: RuntimeError: boom\nos.system('x')): this configuration may not run",
        ),
        cpu=True,
    ),
)
CASES += (
    # The fast path: fused QKV and channels-last before the other settings, flux-fast's Inductor flags before compiling.
    Case(
        "fast_path_fused_qkv_channels_last_flux_fast",
        "flux.1-dev",
        TrialConfig(
            quantization=(("text_encoder_2", "bnb_nf4"),),
            fuse_qkv=True,
            denoiser_channels_last=True,
            attention_backend="_native_cudnn",
            inductor_profile="flux-fast",
            compile="full",
            compile_mode="max-autotune",
        ),
        FLUX_WORKLOAD,
        FLUX_REF,
    ),
    # flux-fast's order: the torchao denoiser loads unquantized, is fused, then quantized with quantize_.
    Case(
        "fused_qkv_torchao_fp8dq_quantized_after_fusing",
        "flux.1-dev",
        TrialConfig(
            quantization=(("text_encoder_2", "bnb_nf4"), ("transformer", "torchao_fp8dq")),
            fuse_qkv=True,
            denoiser_channels_last=True,
            compile="regional",
        ),
        FLUX_WORKLOAD,
        FLUX_REF,
    ),
    Case(
        "fused_qkv_denoiser_channels_last_cpu",
        "tiny-flux",
        TrialConfig(fuse_qkv=True, denoiser_channels_last=True, layerwise_casting="float8_e4m3fn"),
        Workload(height=64, width=64, steps=2),
        "tiny-flux",
        cpu=True,
    ),
)
CASES += (
    # The settings knobs (layerwise casting stores float8 on the host, so the move comes after them).
    Case(
        "layerwise_casting_vae_settings",
        "flux.1-dev",
        TrialConfig(layerwise_casting="float8_e4m3fn", vae_tiling=True, vae_slicing=True, vae_channels_last=True),
        FLUX_WORKLOAD,
        FLUX_REF,
        cpu=True,
    ),
    Case(
        "attention_tf32_float32_regional",
        "flux.1-dev",
        TrialConfig(attention_backend="_native_efficient", tf32=True, compile="regional"),
        FLUX_WORKLOAD,
        FLUX_REF,
        dtype="float32",
    ),
    # The new quantization backends; torchao int4 quantizes on the GPU while loading (device_map).
    Case(
        "torchao_int4_quanto_fp8_int8dq_flash",
        "flux.1-dev",
        TrialConfig(
            quantization=(
                ("transformer", "torchao_int4wo"),
                ("text_encoder", "quanto_fp8"),
                ("text_encoder_2", "torchao_int8dq"),
            ),
            attention_backend="flash",
        ),
        FLUX_WORKLOAD,
        FLUX_REF,
    ),
    Case(
        "torchao_fp8wo_quanto_int4_vae_tiling",
        "flux.1-dev",
        TrialConfig(
            quantization=(("transformer", "torchao_fp8wo"), ("text_encoder_2", "quanto_int4")),
            vae_tiling=True,
        ),
        FLUX_WORKLOAD,
        FLUX_REF,
        cpu=True,
    ),
    Case(
        "wan_layerwise_casting_group_offload",
        "wan2.1-t2v-1.3b",
        TrialConfig(
            layerwise_casting="float8_e4m3fn",
            vae_tiling=True,
            offload="group_leaf",
            use_stream=True,
            quantization=(("text_encoder", "torchao_fp8wo"),),
        ),
        WAN_WORKLOAD,
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    ),
    Case(
        "nf4_regional_compile_artifacts",
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX, compile="regional"),
        FLUX_WORKLOAD,
        FLUX_REF,
        compile_artifacts="/srv/models/qco.compile-artifacts/flux-dev-16gib-5f1c2a9e",
    ),
)
CASES += (
    # Placement per component: the float8 transformer and the VAE resident, the text encoders on the GPU
    # only while encoding; and one component group-offloaded beside resident ones.
    Case(
        "placement_fp8_resident_text_encoders_released",
        "flux.1-dev",
        TrialConfig(
            quantization=(("transformer", "torchao_fp8dq"), ("text_encoder_2", "bnb_nf4")),
            compile="regional",
            placement=(("text_encoder", "released"), ("text_encoder_2", "released")),
            vae_tiling=True,
        ),
        FLUX_WORKLOAD,
        FLUX_REF,
    ),
    Case(
        "placement_model_and_sequential_offload",
        "flux.1-dev",
        TrialConfig(placement=(("text_encoder", "model"), ("text_encoder_2", "sequential"), ("vae", "model"))),
        FLUX_WORKLOAD,
        FLUX_REF,
        cpu=True,
    ),
    Case(
        "placement_wan_group_block_and_leaf_vae_resident",
        "wan2.1-t2v-1.3b",
        TrialConfig(
            placement=(("transformer", "group_block"), ("text_encoder", "group_leaf")),
            blocks_per_group=2,
            use_stream=True,
        ),
        WAN_WORKLOAD,
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    ),
)
GUIDE_CASES = tuple(c for c in CASES if c.guide)
CPU_CASES = tuple(c for c in CASES if c.cpu)
