import os
import warnings

# Quiet, as qco-tune's trials ran: the libraries' notices off (errors still show); set
# before torch, diffusers and transformers load.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TORCH_LOGS", "-all")

import torch
from diffusers import DiffusionPipeline, TorchAoConfig
from diffusers.hooks import apply_group_offloading
from diffusers.quantizers import PipelineQuantizationConfig
from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow
from transformers import BitsAndBytesConfig, QuantoConfig

warnings.filterwarnings("ignore", category=FutureWarning)  # as in the trials

device = "cuda"  # where the pipeline runs

torch._dynamo.config.capture_dynamic_output_shape_ops = True
torch._dynamo.config.cache_size_limit = 1000

# quantize
pipeline_quant_config = PipelineQuantizationConfig(
    quant_mapping={
        "transformer": TorchAoConfig(
            Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
        ),
        "text_encoder": BitsAndBytesConfig(load_in_8bit=True),
        "text_encoder_2": QuantoConfig(weights="int8"),
    },
)

pipeline = DiffusionPipeline.from_pretrained(
    "black-forest-labs/FLUX.1-dev",
    quantization_config=pipeline_quant_config,
    dtype=torch.bfloat16,
)

# group offloading, 2 block(s) per group
onload_device = torch.device(device)
offload_device = torch.device("cpu")
pipeline.transformer.enable_group_offload(
    onload_device=onload_device,
    offload_device=offload_device,
    offload_type="block_level",
    num_blocks_per_group=2,
    use_stream=True,
    record_stream=True,
    low_cpu_mem_usage=True,
)
pipeline.vae.enable_group_offload(
    onload_device=onload_device,
    offload_device=offload_device,
    offload_type="block_level",
    num_blocks_per_group=2,
    use_stream=True,
    record_stream=True,
    low_cpu_mem_usage=True,
)
apply_group_offloading(
    pipeline.text_encoder,
    onload_device=onload_device,
    offload_device=offload_device,
    offload_type="block_level",
    num_blocks_per_group=2,
    use_stream=True,
    record_stream=True,
    low_cpu_mem_usage=True,
)
apply_group_offloading(
    pipeline.text_encoder_2,
    onload_device=onload_device,
    offload_device=offload_device,
    offload_type="block_level",
    num_blocks_per_group=2,
    use_stream=True,
    record_stream=True,
    low_cpu_mem_usage=True,
)

# compile
pipeline.transformer.compile_repeated_blocks(fullgraph=True)

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
