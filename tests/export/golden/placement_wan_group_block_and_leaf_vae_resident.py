import os
import warnings

# Quiet, as qco-tune's trials ran: the libraries' notices off (errors still show); set
# before torch, diffusers and transformers load.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TORCH_LOGS", "-all")

import torch
from diffusers import DiffusionPipeline
from diffusers.hooks import apply_group_offloading
from diffusers.utils import export_to_video

warnings.filterwarnings("ignore", category=FutureWarning)  # as in the trials

device = "cuda"  # where the pipeline runs

pipeline = DiffusionPipeline.from_pretrained(
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", dtype=torch.bfloat16
)

# placement per component
onload_device = torch.device(device)
offload_device = torch.device("cpu")
pipeline.transformer.enable_group_offload(
    onload_device=onload_device,
    offload_device=offload_device,
    offload_type="block_level",
    num_blocks_per_group=2,
    use_stream=True,
)
pipeline.vae.to(device)
apply_group_offloading(
    pipeline.text_encoder,
    onload_device=onload_device,
    offload_device=offload_device,
    offload_type="leaf_level",
    use_stream=True,
)

prompt = (
    "\n"
    "The camera rushes from far to near in a low-angle shot, \n"
    "revealing a white ferret on a log. It plays, leaps into the water, and emerges, "
    "as the camera zooms in \n"
    "for a close-up. Water splashes berry bushes nearby, while moss, snow, and leaves "
    "blanket the ground. \n"
    "Birch trees and a light blue sky frame the scene, with ferns in the foreground. "
    "Side lighting casts dynamic \n"
    "shadows and warm highlights. Medium composition, front view, low angle, with "
    "depth of field.\n"
)
negative_prompt = (
    "\n"
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, "
    "paintings, images, static, overall gray, worst quality, \n"
    "low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, \n"
    "misshapen limbs, fused fingers, still picture, messy background, three legs, many "
    "people in the background, walking backwards\n"
)

video = pipeline(
    prompt=prompt,
    negative_prompt=negative_prompt,
    height=480,
    width=832,
    num_frames=81,
    num_inference_steps=50,
    guidance_scale=5.0,
    generator=torch.Generator("cpu").manual_seed(0),
).frames[0]
export_to_video(video, "output.mp4", fps=16)
