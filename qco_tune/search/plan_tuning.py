"""The planner's knob groups, priors and tunables, each with its source (``qco_tune.search.planner``).

Stdlib only.
"""

from __future__ import annotations

from typing import Any

from qco_tune.core.config import COMPILE_MODES

COMPILE_KNOBS = ("compile", "compile_mode", "fullgraph")
"""Stage 2's knobs."""
OFFLOAD_KNOB = "offload"
PLACEMENT_KNOBS = (OFFLOAD_KNOB, "blocks_per_group", "use_stream", "non_blocking", "record_stream", "low_cpu_mem_usage")
"""Where the components live: with ``quant.*`` a memory level's knobs (stage 1). Stage 3 refines every knob of
the space that is neither these nor a compile knob."""

# Priors, before the study measures a backend. Source: DESIGN.md's table "Measured on an H100 80GB,
# 2026-11-24" (FLUX.1-dev transformer, random weights, 1024², s/step): bf16 eager 0.184, bf16 + regional
# compile 0.135; bnb nf4 eager 0.199, + full compile 0.147; torchao fp8 dynamic (per-row) eager 0.352,
# + regional compile 0.108. bnb fp4 is taken as nf4 (the same kernels).
PRIOR_EAGER: dict[str, float] = {
    "none": 1.0,
    "bnb_nf4": 0.199 / 0.184,
    "bnb_fp4": 0.199 / 0.184,
    "torchao_fp8dq": 0.352 / 0.184,
}
"""A backend's eager time relative to the unquantized model's."""
PRIOR_SPEEDUP: dict[str, float] = {
    "none": 0.184 / 0.135,
    "bnb_nf4": 0.199 / 0.147,
    "bnb_fp4": 0.199 / 0.147,
    "torchao_fp8dq": 0.352 / 0.108,
}
"""Eager / compiled time of a denoiser quantized with a backend."""
UNKNOWN_EAGER = 1.1
"""A backend not in ``PRIOR_EAGER``: a little slower than unquantized (dequantization)."""
UNKNOWN_SPEEDUP = PRIOR_SPEEDUP["none"]
"""A backend not in ``PRIOR_SPEEDUP`` compiles like the unquantized model."""
PRIOR_OFFLOAD: dict[str, float] = {"none": 1.0, "model": 2.0, "group_leaf": 2.8, "group_block": 3.0, "sequential": 10.0}
"""Latency factor of an offload kind. Model offload: 8.624 s against 4.221 s resident (NF4, compiled, H200,
measurements/h200-2026-12-01); group offloading: 0.516 s/step (leaf) and 0.543 (block) against 0.184 eager
(DESIGN.md's H100 table); sequential offload moves every layer at every call (a guess)."""
PRIOR_BYTES: dict[str, float] = {"none": 2.0, "bnb_nf4": 0.5, "bnb_fp4": 0.5, "torchao_int4wo": 0.5, "quanto_int4": 0.5}
"""Bytes per weight of a backend (others: 8-bit, 1.0): which quantization of a component is the most compact."""
PREFERRED_PLACEMENT: dict[str, Any] = {
    "use_stream": True,
    "non_blocking": True,
    "record_stream": False,
    "low_cpu_mem_usage": False,
}
"""Group offloading's options in a memory level: the guide's (prefetch on a stream, non-blocking copies)."""
DENOISER_CALLS = 28
"""The denoiser runs once per step, a text encoder once per call: how a component's weight counts in latency."""

MIN_SURVEY = 2
"""Searched memory levels measured at least before the survey may end by patience."""
SURVEY_PATIENCE = 2
"""The survey ends after this many searched memory levels in a row that leave the reachable front unchanged."""
SURVEY_SHARE = 0.25
"""The survey ends when it has measured this share of a trial target (at least one level)."""
SURVEY_MAX = 8
"""Searched memory levels at most, in a study without a trial target."""
LEVELS_PER_FAMILY = 2
"""A family whose levels did not fit is tried again with a more compact level, this many levels in all."""
MAX_CHECKS = 400
"""Predictions and ``runnable`` calls at most per proposal (each costs about 0.1 ms): a bound on planning time."""
SPEEDUP_MARGIN = 1.25
"""Optimism on a speed-up (another compile variant may do better)."""
PROMISE = 1.0
"""A level is compiled during the survey when its hoped compiled latency (eager / speed-up, no margin) beats
the fastest other feasible trial by this factor: when the prior alone predicts a new fastest. On the H200 the
float8 level ran 12.4 s eager and hopes for 3.8 s (the prior 3.26x; 4.07x measured by hand) against the NF4
recipe's 4.22 s; a stricter factor (1.15) let two slow eager levels run first (one over 3 minutes)."""
REFINE_SPEEDUP = 1.3
"""A compiled front configuration's next compile variant is assumed possibly this much faster (divided by the
variants measured so far: each one that did not help makes the next less promising)."""
MAX_COMPILE_VARIANTS = 3
"""Compile variants measured at most per configuration (each costs minutes of first call)."""
NEAR_BUDGET = 1.1
"""An eager configuration this close over the budget may fit compiled (fused kernels keep fewer activations)."""
IMPROVEMENT = 1e-3
"""Relative hypervolume gain that counts as enlarging the front."""
SCOPE_COST = {"regional": 0, "full": 1}
MODE_COST = {mode: i for i, mode in enumerate(COMPILE_MODES)}
