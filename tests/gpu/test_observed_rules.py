"""Rules of the space that rest on an observed failure, re-checked on a CUDA GPU (skipped without one).

Each case runs the rule's combination with the tiny preset through the real runner and expects the
failure the rule quotes. When a release of torch, diffusers or a quantization library fixes it, the
case fails here, and the rule should leave `qco_tune/search/rules.py`: combinations that work must not be
excluded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qco_tune.core.config import TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import TrialRequest
from qco_tune.core.studyspec import Workload
from qco_tune.measure.runner import run_trial
from qco_tune.search.rules import RULES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

WORKLOAD = Workload(height=128, width=128, steps=2, guidance=3.5, max_sequence_length=32)

OBSERVED = {
    "group_offload_with_bitsandbytes_int8": (
        TrialConfig(
            quantization=(("text_encoder_2", "bnb_int8"), ("transformer", "bnb_int8")),
            offload="group_block",
            use_stream=True,
            low_cpu_mem_usage=True,
        ),
        "Expected a cuda device",
    ),
    "group_offload_with_quanto": (
        # Without compilation: the first observations were all fullgraph trials as well.
        TrialConfig(quantization=(("transformer", "quanto_int8"),), offload="group_block"),
        "mat2 is on cpu",
    ),
    "fullgraph_with_group_offload": (
        TrialConfig(compile="regional", fullgraph=True, offload="group_block"),
        "torch.compiler.disable",
    ),
}


@pytest.mark.parametrize("rule", sorted(OBSERVED))
def test_the_observed_failure_still_happens(rule: str, qco_cache_dir: Path) -> None:
    assert rule in {r.name for r in RULES}, f"{rule} is no longer a rule of the space"
    config, fragment = OBSERVED[rule]
    request = TrialRequest(
        model=get_preset("tiny-flux").model_info(),
        config=config,
        workload=WORKLOAD,
        dtype="bfloat16",
        device="cuda",
        timed_calls=1,
        max_timed_calls=2,
        warmup_calls=0,
        cache_dir=str(qco_cache_dir),
    )
    m = run_trial(request, timeout=300)
    assert m.status == "error", f"{rule}: the combination ran ({m.status}); the rule may be obsolete"
    assert fragment in f"{m.reason}\n{m.output_tail}", (m.reason, m.output_tail)
