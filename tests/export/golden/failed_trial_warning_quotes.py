# Exported by qco-tune 0.1.0 from study 'tiny\nimport os', trial 3 (chosen by number).
# Nothing was measured; it ran on CPU, 2026-11-24.
# Configuration: text_encoder:quanto_int8, transformer:quanto_int8.
# WARNING: trial 3 failed (error: RuntimeError: boom os.system('x')): this configuration
# may not run

import os
import warnings

# Quiet, as qco-tune's trials ran: the libraries' notices off (errors still show); set
# before torch, diffusers and transformers load.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TORCH_LOGS", "-all")

import torch
from diffusers import DiffusionPipeline, QuantoConfig
from diffusers.quantizers import PipelineQuantizationConfig
from transformers import QuantoConfig as TransformersQuantoConfig

warnings.filterwarnings("ignore", category=FutureWarning)  # as in the trials

device = "cuda"  # where the pipeline runs

# quantize
pipeline_quant_config = PipelineQuantizationConfig(
    quant_mapping={
        "transformer": QuantoConfig(weights_dtype="int8"),
        "text_encoder": TransformersQuantoConfig(weights="int8"),
    },
)

pipeline = DiffusionPipeline.from_pretrained(
    '/models/it\'s "here"/tiny-flux',
    quantization_config=pipeline_quant_config,
    dtype=torch.bfloat16,
)
pipeline.to(device)

prompt = 'a "quoted" prompt,\nwith a newline and a \\ backslash'

image = pipeline(
    prompt=prompt,
    height=64,
    width=64,
    num_inference_steps=2,
    generator=torch.Generator("cpu").manual_seed(0),
).images[0]
image.save("output.png")
