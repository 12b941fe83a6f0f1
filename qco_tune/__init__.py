"""qco-tune: tune quantization, torch.compile and offloading of diffusers pipelines under a VRAM budget."""

__version__ = "0.1.0"
