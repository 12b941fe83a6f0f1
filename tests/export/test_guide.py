"""The guide's recipes, as configurations, export to code that does what the guide's own code does.

The guide is the diffusers page "Compiling and offloading quantized models"
(docs/source/en/optimization/speed-memory-optims.md). Its code blocks below are copied as they are,
except: the quantization-only recipe is the first block without its compile lines; the Wan block's
unused ``UMT5EncoderModel.from_pretrained`` (it would download, and its result is never used) is left
out. Both programs run against the FAKE recording pipeline; the comparison allows three differences
that change nothing: ``torch_dtype`` is the deprecated name of ``dtype``; the guide's
``.to("cuda")`` before offloading is undone by the offloading (the export leaves it out); and the
guide leaves height, width, steps and guidance at the pipeline's defaults, which the export spells out.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from export_cases import GUIDE_WAN_NEGATIVE, GUIDE_WAN_PROMPT, NF4_FLUX
from export_fakes import Trace, recording, run_snippet, write_model_index

from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.studyspec import Workload
from qco_tune.export.render import render_python

pytest.importorskip("diffusers")

FLUX_QUANTIZATION = '''
import torch
from diffusers import DiffusionPipeline
from diffusers.quantizers import PipelineQuantizationConfig

# quantize
pipeline_quant_config = PipelineQuantizationConfig(
    quant_backend="bitsandbytes_4bit",
    quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch.bfloat16},
    components_to_quantize=["transformer", "text_encoder_2"],
)
pipeline = DiffusionPipeline.from_pretrained(
    "black-forest-labs/FLUX.1-dev",
    quantization_config=pipeline_quant_config,
    torch_dtype=torch.bfloat16,
).to("cuda")

pipeline("""
    cinematic film still of a cat sipping a margarita in a pool in Palm Springs, California
    highly detailed, high budget hollywood movie, cinemascope, moody, epic, gorgeous, film grain
"""
).images[0]
'''

FLUX_QUANTIZATION_COMPILE = '''
import torch
from diffusers import DiffusionPipeline
from diffusers.quantizers import PipelineQuantizationConfig

torch._dynamo.config.capture_dynamic_output_shape_ops = True

# quantize
pipeline_quant_config = PipelineQuantizationConfig(
    quant_backend="bitsandbytes_4bit",
    quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch.bfloat16},
    components_to_quantize=["transformer", "text_encoder_2"],
)
pipeline = DiffusionPipeline.from_pretrained(
    "black-forest-labs/FLUX.1-dev",
    quantization_config=pipeline_quant_config,
    torch_dtype=torch.bfloat16,
).to("cuda")

# compile
pipeline.transformer.to(memory_format=torch.channels_last)
pipeline.transformer.compile(mode="max-autotune", fullgraph=True)
pipeline("""
    cinematic film still of a cat sipping a margarita in a pool in Palm Springs, California
    highly detailed, high budget hollywood movie, cinemascope, moody, epic, gorgeous, film grain
"""
).images[0]
'''

FLUX_MODEL_OFFLOAD = """
import torch
from diffusers import DiffusionPipeline
from diffusers.quantizers import PipelineQuantizationConfig

torch._dynamo.config.cache_size_limit = 1000
torch._dynamo.config.capture_dynamic_output_shape_ops = True

# quantize
pipeline_quant_config = PipelineQuantizationConfig(
    quant_backend="bitsandbytes_4bit",
    quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch.bfloat16},
    components_to_quantize=["transformer", "text_encoder_2"],
)
pipeline = DiffusionPipeline.from_pretrained(
    "black-forest-labs/FLUX.1-dev",
    quantization_config=pipeline_quant_config,
    torch_dtype=torch.bfloat16,
).to("cuda")

# model CPU offloading
pipeline.enable_model_cpu_offload()

# compile
pipeline.transformer.compile()
pipeline(
    "cinematic film still of a cat sipping a margarita in a pool in Palm Springs, California, highly detailed, high budget hollywood movie, cinemascope, moody, epic, gorgeous, film grain"
).images[0]
"""  # noqa: E501

WAN_GROUP_OFFLOAD = """
import torch
from diffusers import AutoModel, DiffusionPipeline
from diffusers.hooks import apply_group_offloading
from diffusers.utils import export_to_video
from diffusers.quantizers import PipelineQuantizationConfig
from transformers import UMT5EncoderModel

torch._dynamo.config.cache_size_limit = 1000
torch._dynamo.config.capture_dynamic_output_shape_ops = True

# quantize
pipeline_quant_config = PipelineQuantizationConfig(
    quant_backend="bitsandbytes_4bit",
    quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch.bfloat16},
    components_to_quantize=["transformer", "text_encoder"],
)

pipeline = DiffusionPipeline.from_pretrained(
    "Wan-AI/Wan2.1-T2V-14B-Diffusers",
    quantization_config=pipeline_quant_config,
    torch_dtype=torch.bfloat16,
).to("cuda")

# group offloading
onload_device = torch.device("cuda")
offload_device = torch.device("cpu")

pipeline.transformer.enable_group_offload(
    onload_device=onload_device,
    offload_device=offload_device,
    offload_type="leaf_level",
    use_stream=True,
    non_blocking=True
)
pipeline.vae.enable_group_offload(
    onload_device=onload_device,
    offload_device=offload_device,
    offload_type="leaf_level",
    use_stream=True,
    non_blocking=True
)
apply_group_offloading(
    pipeline.text_encoder,
    onload_device=onload_device,
    offload_type="leaf_level",
    use_stream=True,
    non_blocking=True
)

# compile
pipeline.transformer.compile()

prompt = PROMPT
negative_prompt = NEGATIVE_PROMPT

output = pipeline(
    prompt=prompt,
    negative_prompt=negative_prompt,
    num_frames=81,
    guidance_scale=5.0,
).frames[0]
export_to_video(output, "output.mp4", fps=16)
"""

GUIDE_PROMPT_2 = """
    cinematic film still of a cat sipping a margarita in a pool in Palm Springs, California
    highly detailed, high budget hollywood movie, cinemascope, moody, epic, gorgeous, film grain
"""
GUIDE_PROMPT_3 = (
    "cinematic film still of a cat sipping a margarita in a pool in Palm Springs, California, highly detailed, "
    "high budget hollywood movie, cinemascope, moody, epic, gorgeous, film grain"
)
# FluxPipeline computes its default size from the transformer's sample size: 1024 x 1024 for FLUX.1.
FLUX_DEFAULTS = {"height": 1024, "width": 1024}

RECIPES = [
    (
        "quantization",
        FLUX_QUANTIZATION,
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX),
        Workload(prompt=GUIDE_PROMPT_2, steps=28, guidance=3.5),
    ),
    (
        "quantization + compile",
        FLUX_QUANTIZATION_COMPILE,
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX, compile="full", compile_mode="max-autotune", fullgraph=True),
        Workload(prompt=GUIDE_PROMPT_2, steps=28, guidance=3.5),
    ),
    (
        "quantization + compile + model offload",
        FLUX_MODEL_OFFLOAD,
        "flux.1-dev",
        TrialConfig(quantization=NF4_FLUX, compile="full", offload="model"),
        Workload(prompt=GUIDE_PROMPT_3, steps=28, guidance=3.5),
    ),
    (
        "quantization + compile + group offload (Wan2.1)",
        WAN_GROUP_OFFLOAD.replace("from transformers import UMT5EncoderModel\n", ""),
        "wan2.1-t2v-14b",
        TrialConfig(
            quantization=(("transformer", "bnb_nf4"), ("text_encoder", "bnb_nf4")),
            compile="full",
            offload="group_leaf",
            use_stream=True,
            non_blocking=True,
        ),
        Workload(
            prompt=GUIDE_WAN_PROMPT,
            negative_prompt=GUIDE_WAN_NEGATIVE,
            height=480,
            width=832,
            frames=81,
            steps=50,
            guidance=5.0,
        ),
    ),
    (
        "the same, placed per component (Wan2.1)",
        WAN_GROUP_OFFLOAD.replace("from transformers import UMT5EncoderModel\n", ""),
        "wan2.1-t2v-14b",
        TrialConfig(
            quantization=(("transformer", "bnb_nf4"), ("text_encoder", "bnb_nf4")),
            compile="full",
            placement=(("transformer", "group_leaf"), ("vae", "group_leaf"), ("text_encoder", "group_leaf")),
            use_stream=True,
            non_blocking=True,
        ),
        Workload(
            prompt=GUIDE_WAN_PROMPT,
            negative_prompt=GUIDE_WAN_NEGATIVE,
            height=480,
            width=832,
            frames=81,
            steps=50,
            guidance=5.0,
        ),
    ),
]


def _without_moves_before_offloading(trace: Trace) -> list[tuple[str, str, dict[str, Any]]]:
    offloads = {"model_cpu_offload", "sequential_cpu_offload", "group_offload"}
    # The guide's FLUX recipes put the transformer in channels-last memory format, which changes nothing:
    # a transformer has no 4D weights.
    calls = [call for call in trace.calls if call[:2] != ("transformer", "to")]
    if not any(action in offloads for _, action, _ in calls):
        return calls
    return [call for call in calls if call[1] != "to"]


def _loads(trace: Trace) -> list[tuple[str, dict[str, Any]]]:
    return [(path, {("dtype" if k == "torch_dtype" else k): v for k, v in kw.items()}) for path, kw in trace.loads]


def _call_with_defaults(call: dict[str, Any], pipeline_class: str) -> dict[str, Any]:
    import diffusers

    signature = inspect.signature(getattr(diffusers, pipeline_class).__call__)
    defaults = {
        name: p.default
        for name, p in signature.parameters.items()
        if name in ("height", "width", "num_frames", "num_inference_steps", "guidance_scale")
    }
    if pipeline_class == "FluxPipeline":
        defaults.update(FLUX_DEFAULTS)
    filled = {**defaults, **call}
    filled.pop("generator", None)  # the guide leaves the noise unseeded
    return {k: v for k, v in filled.items() if v is not None}


@pytest.mark.parametrize(("name", "guide", "preset", "config", "workload"), RECIPES, ids=[r[0] for r in RECIPES])
def test_export_does_what_the_guide_does(
    name: str,
    guide: str,
    preset: str,
    config: TrialConfig,
    workload: Workload,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = get_preset(preset).model_info()
    folder = write_model_index(tmp_path / "model", model)
    monkeypatch.chdir(tmp_path)
    reference = get_preset(preset).hub_id
    guide_source = guide.replace(repr(reference).replace("'", '"'), repr(str(folder)))
    with recording(model, monkeypatch) as from_guide:
        run_snippet(guide_source, {"PROMPT": workload.prompt, "NEGATIVE_PROMPT": workload.negative_prompt})
    source = render_python(config, model=model, workload=workload, model_ref=str(folder))
    with recording(model, monkeypatch) as exported:
        run_snippet(source)

    assert _loads(exported) == _loads(from_guide)
    assert exported.dynamo == from_guide.dynamo
    assert _without_moves_before_offloading(exported) == _without_moves_before_offloading(from_guide)
    ours, theirs = exported.pipeline_calls, from_guide.pipeline_calls
    assert len(ours) == len(theirs) == 1
    assert _call_with_defaults(ours[0], model.pipeline_class) == _call_with_defaults(theirs[0], model.pipeline_class)
    if model.is_video:
        assert exported.saved == from_guide.saved == [("video", "output.mp4", "16")]
