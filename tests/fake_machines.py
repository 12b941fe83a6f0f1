"""FAKE machines for every test directory: the capabilities a probe would report on them, with no GPU here.

Import with ``from fake_machines import H100`` (``tests/`` is on the path of every test, by its conftest).
A test that needs a machine of its own derives it with ``dataclasses.replace`` and says why.
"""

from __future__ import annotations

import dataclasses

from qco_tune.core.config import ATTENTION_BACKENDS
from qco_tune.core.records import Capabilities

CPU = Capabilities(cuda=False, backends=("torchao", "quanto"), compile=True, host="laptop")
"""A CPU-only machine with torchao and quanto (bitsandbytes refuses to work without CUDA)."""
H100 = Capabilities(
    cuda=True,
    gpu_name="NVIDIA H100 80GB HBM3",
    gpu_count=1,
    total_memory=80 * 2**30,
    compute_capability=(9, 0),
    backends=("bitsandbytes", "torchao", "quanto"),
    attention_backends=ATTENTION_BACKENDS,
)
"""An H100 with every quantization library and every attention backend installed and usable: every knob
is in the space."""
H100_NATIVE_ATTENTION = dataclasses.replace(H100, attention_backends=())
"""An H100 as a probe finds it without extra attention kernels (no attention backend beyond ``native``)."""
A100 = dataclasses.replace(H100, gpu_name="NVIDIA A100-SXM4-80GB", compute_capability=(8, 0))
"""An Ampere GPU: no float8 matmuls (compute capability 8.0)."""
H200 = dataclasses.replace(H100, gpu_name="NVIDIA H200", total_memory=150_109_880_320)
"""An H200 with its memory as torch reports it."""
