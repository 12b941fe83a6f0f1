"""A FAKE FLUX.1-dev trial runner for planner tests: no pipeline runs, figures come from simple rules.

Latency per denoising step follows DESIGN.md's H100 table and the H200 measurements of 2026-12-01
(``../shared/measurements/h200-2026-12-01/README.md``): bf16 0.184 s eager and 0.135 regional, NF4 0.186
eager and 0.145 compiled, torchao float8 dynamic 0.352 eager and 0.108 regional (the hand-built case's
3.047 s for 28 steps); a backend without a figure 0.25 eager, 0.20 compiled. Model offload adds the 4.4 s
per call measured on the H200 (8.624 against 4.221 s), group offloading triples the step. Memory: the
weights (2, 1 or 0.5 bytes a parameter by backend) plus 6 GiB of activations, context and allocator slack
(NF4 pipeline: 15.1 GiB against 16.1 measured; float8 + NF4 T5: 20.0 against 21.5). The secondary settings
never help: another attention backend or a VAE setting costs 2 % and no memory.
"""

from __future__ import annotations

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Measurement, ModelInfo, TrialRequest

GIB = 2**30
EAGER_STEP = {"none": 0.184, "bnb_nf4": 0.186, "torchao_fp8dq": 0.352}
COMPILED_STEP = {"none": 0.135, "bnb_nf4": 0.145, "torchao_fp8dq": 0.108}
UNKNOWN_EAGER, UNKNOWN_COMPILED = 0.25, 0.20
BYTES_PER_PARAM = {"none": 2.0, "bnb_nf4": 0.5, "bnb_fp4": 0.5, "torchao_int4wo": 0.5, "quanto_int4": 0.5}
OVERHEAD_GIB = 6.0
STEPS = 28


class FakeFluxRunner:
    """Answers a ``TrialRequest`` like the study's runner, from the rules above; records what it ran."""

    def __init__(self, model: ModelInfo) -> None:
        self.model = model
        self.ran: list[TrialConfig] = []

    def latency(self, config: TrialConfig) -> float:
        backend = config.backend_for(self.model.denoiser)
        if config.compile == "none":
            step = EAGER_STEP.get(backend, UNKNOWN_EAGER)
        else:
            step = COMPILED_STEP.get(backend, UNKNOWN_COMPILED)
            step *= 0.97 if config.compile_mode != "default" else 1.0
            step *= 0.99 if config.fullgraph else 1.0
            step *= 1.01 if config.compile == "full" and backend == "torchao_fp8dq" else 1.0
        if config.is_group_offload:
            step *= 3.0
        latency = STEPS * step + 0.3 + (4.4 if config.offload == "model" else 0.0)
        return latency * (1.02 ** len(config.settings())) * (1.05 if not config.use_stream else 1.0)

    def memory(self, config: TrialConfig) -> float:
        weights = {
            c.name: (c.params or 0) * BYTES_PER_PARAM.get(config.backend_for(c.name), 1.0) / GIB
            for c in self.model.components
        }
        if config.offload == "model":
            resident = max(weights.values())
        elif config.is_group_offload or config.offload == "sequential":
            resident = 2.0
        else:
            resident = sum(weights.values())
        return (resident + OVERHEAD_GIB) * GIB

    def __call__(self, request: TrialRequest, timeout: float = 0.0, on_phase: object = None) -> Measurement:
        config = request.config
        self.ran.append(config)
        need = int(self.memory(config))
        seconds = 60.0 if config.compile == "none" else 200.0
        if request.memory_limit is not None and need > request.memory_limit:
            return Measurement(status="oom", device="cuda", reason="CUDA out of memory", extra={"wall_s": 40.0})
        latency = self.latency(config)
        return Measurement(
            status="ok",
            device="cuda",
            latency_s=latency,
            step_time_s=latency / STEPS,
            first_call_s=seconds - 40,
            peak_device_bytes=need,
            peak_allocated_bytes=need,
            peak_reserved_bytes=need,
            extra={"wall_s": seconds},
        )
