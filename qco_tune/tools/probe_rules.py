"""Which combinations near an observed failure run, to draw a rule of the space no wider than the evidence.

    python3 -m qco_tune.tools.probe_rules OUT.json

Runs each variant below once with the tiny preset on the GPU through the real runner (no budget,
128x128, 2 steps) and writes status and reason per variant. The first variant of each group is the
combination that failed in a study; the others change one thing at a time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from qco_tune.core.config import QuantBackend, TrialConfig
from qco_tune.core.presets import get_preset
from qco_tune.core.records import TrialRequest
from qco_tune.core.studyspec import Workload
from qco_tune.measure.runner import run_trial

WORKLOAD = Workload(height=128, width=128, steps=2, guidance=3.5, max_sequence_length=32)
T5_INT8: tuple[str, QuantBackend] = ("text_encoder_2", "bnb_int8")
DIT_INT8: tuple[str, QuantBackend] = ("transformer", "bnb_int8")
BLOCK_STREAM_LOWMEM: dict[str, Any] = {"offload": "group_block", "use_stream": True, "low_cpu_mem_usage": True}
VARIANTS: dict[str, TrialConfig] = {
    # bitsandbytes int8 under group offloading: study trial 4 failed, "Expected a cuda device, but got: cpu".
    "int8 t5+dit, block, stream, low_cpu_mem": TrialConfig(quantization=(T5_INT8, DIT_INT8), **BLOCK_STREAM_LOWMEM),
    "int8 dit, block, stream, low_cpu_mem": TrialConfig(quantization=(DIT_INT8,), **BLOCK_STREAM_LOWMEM),
    "int8 t5, block, stream, low_cpu_mem": TrialConfig(quantization=(T5_INT8,), **BLOCK_STREAM_LOWMEM),
    "int8 t5+dit, block, stream": TrialConfig(quantization=(T5_INT8, DIT_INT8), offload="group_block", use_stream=True),
    "int8 t5+dit, block": TrialConfig(quantization=(T5_INT8, DIT_INT8), offload="group_block"),
    "int8 t5+dit, leaf, stream": TrialConfig(quantization=(T5_INT8, DIT_INT8), offload="group_leaf", use_stream=True),
    "int8 t5, leaf": TrialConfig(quantization=(T5_INT8,), offload="group_leaf"),
    # quanto under group offloading without compilation (the first failures were fullgraph trials too).
    "quanto dit, leaf": TrialConfig(quantization=(("transformer", "quanto_int8"),), offload="group_leaf"),
    "quanto t5, leaf, stream": TrialConfig(
        quantization=(("text_encoder_2", "quanto_int8"),), offload="group_leaf", use_stream=True
    ),
}


def main() -> int:
    out = Path(sys.argv[1])
    results = {}
    for name, config in VARIANTS.items():
        request = TrialRequest(
            model=get_preset("tiny-flux").model_info(),
            config=config,
            workload=WORKLOAD,
            dtype="bfloat16",
            device="cuda",
            timed_calls=1,
            max_timed_calls=2,
            warmup_calls=0,
            cache_dir=str(out.parent / "cache"),
        )
        m = run_trial(request, timeout=240)
        results[name] = {"config": config.to_dict(), "status": m.status, "reason": m.reason}
        print(f"{name}: {m.status} {m.reason or ''}", flush=True)
        out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
