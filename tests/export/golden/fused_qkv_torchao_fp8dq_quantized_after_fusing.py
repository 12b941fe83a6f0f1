import os
import warnings

# Quiet, as qco-tune's trials ran: the libraries' notices off (errors still show); set
# before torch, diffusers and transformers load.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TORCH_LOGS", "-all")

import torch
from diffusers import DiffusionPipeline
from diffusers.quantizers import PipelineQuantizationConfig
from torchao.quantization import (
    Float8DynamicActivationFloat8WeightConfig,
    PerRow,
    quantize_,
)

warnings.filterwarnings("ignore", category=FutureWarning)  # as in the trials

device = "cuda"  # where the pipeline runs

torch._dynamo.config.capture_dynamic_output_shape_ops = True

# quantize
pipeline_quant_config = PipelineQuantizationConfig(
    quant_backend="bitsandbytes_4bit",
    quant_kwargs={
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": torch.bfloat16,
    },
    components_to_quantize=["text_encoder_2"],
)

pipeline = DiffusionPipeline.from_pretrained(
    "black-forest-labs/FLUX.1-dev",
    quantization_config=pipeline_quant_config,
    dtype=torch.bfloat16,
)
pipeline.to(device)

# denoiser and VAE settings
pipeline.transformer.fuse_qkv_projections()
pipeline.transformer.to(memory_format=torch.channels_last)
quantize_(
    pipeline.transformer,
    Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
)

# compile
pipeline.transformer.compile_repeated_blocks()

prompt = (
    "cinematic film still of a cat sipping a margarita in a pool in Palm Springs, "
    "California, highly detailed, high budget hollywood movie, cinemascope, moody, "
    "epic, gorgeous, film grain"
)

image = pipeline(
    prompt=prompt,
    height=1024,
    width=1024,
    num_inference_steps=28,
    guidance_scale=3.5,
    generator=torch.Generator("cpu").manual_seed(0),
).images[0]
image.save("output.png")
