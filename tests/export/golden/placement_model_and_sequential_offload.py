import os
import warnings

# Quiet, as qco-tune's trials ran: the libraries' notices off (errors still show); set
# before torch, diffusers and transformers load.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TORCH_LOGS", "-all")

import torch
from accelerate import cpu_offload, cpu_offload_with_hook
from diffusers import DiffusionPipeline

warnings.filterwarnings("ignore", category=FutureWarning)  # as in the trials

device = "cuda"  # where the pipeline runs

pipeline = DiffusionPipeline.from_pretrained(
    "black-forest-labs/FLUX.1-dev", dtype=torch.bfloat16
)

# placement per component (hooks move components off the GPU)
pipeline.transformer.to(device)
_, vae_hook = cpu_offload_with_hook(pipeline.vae, device)
_, text_encoder_hook = cpu_offload_with_hook(pipeline.text_encoder, device)
cpu_offload(
    pipeline.text_encoder_2,
    device,
    offload_buffers=len(pipeline.text_encoder_2._parameters) > 0,
)
pipeline.text_encoder_2.register_forward_pre_hook(
    torch.compiler.disable(lambda module, args: text_encoder_hook.offload())
)
pipeline.text_encoder.register_forward_pre_hook(
    torch.compiler.disable(lambda module, args: vae_hook.offload())
)

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
