"""The pipeline call, as data: the workload's keyword arguments and the seeded generator.

Stdlib only. The trial child (``measure.backends.record.call_kwargs``) makes this call and the
exporter (``export.plan.plan_call``) writes it, so a snippet calls the pipeline as its trial did.
"""

from __future__ import annotations

from typing import Any

from qco_tune.core.studyspec import Workload

GENERATOR_DEVICE = "cpu"
"""The generator's device: a CPU generator seeded with ``workload.seed`` draws the same initial noise
on every device and configuration (diffusers draws it on the CPU and moves it)."""


def workload_arguments(workload: Workload, *, video: bool) -> tuple[tuple[str, Any, bool], ...]:
    """``(name, value, required)`` of each workload argument, in the order a snippet writes them.

    An argument that is not required is passed only where it is set and the pipeline takes it.
    """
    return (
        ("prompt", workload.prompt, True),
        ("negative_prompt", workload.negative_prompt, False),
        ("height", workload.height, True),
        ("width", workload.width, True),
        ("num_frames", workload.frames if video else None, False),
        ("num_inference_steps", workload.steps, True),
        ("guidance_scale", workload.guidance, False),
        ("max_sequence_length", workload.max_sequence_length, False),
    )


__all__ = ["GENERATOR_DEVICE", "workload_arguments"]
