import os
import warnings

# Quiet, as qco-tune's trials ran: the libraries' notices off (errors still show); set
# before torch, diffusers and transformers load.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TORCH_LOGS", "-all")

import torch
from diffusers import DiffusionPipeline

warnings.filterwarnings("ignore", category=FutureWarning)  # as in the trials

device = "cuda"  # where the pipeline runs

pipeline = DiffusionPipeline.from_pretrained("tiny-flux", dtype=torch.bfloat16)

# denoiser and VAE settings
pipeline.transformer.fuse_qkv_projections()
pipeline.transformer.to(memory_format=torch.channels_last)
pipeline.transformer.enable_layerwise_casting(
    storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16
)
pipeline.to(device)

prompt = "a photo of an astronaut riding a horse on the moon"

image = pipeline(
    prompt=prompt,
    height=64,
    width=64,
    num_inference_steps=2,
    generator=torch.Generator("cpu").manual_seed(0),
).images[0]
image.save("output.png")
