"""Run an exported snippet on the GPU and time its pipeline call as a trial times it.

    python measure_snippet.py SNIPPET.py RESULT.json WARMUP_CALLS TIMED_CALLS

Runs the snippet's statements up to its pipeline call (imports, Dynamo settings, loading,
offloading, compilation); then its call statement as the trial makes it, once (the cold start),
``WARMUP_CALLS`` more times and ``TIMED_CALLS`` times timed; then the call as written and the rest
(saving the output), so the snippet also runs to completion. Writes the median latency and torch's
allocator peaks (reset before loading, as the trial's tracker does) as JSON.

The trial makes the snippet's call with two differences, repeated here: it hides the progress bar,
and it asks for numpy arrays (``output_type="np"``) where the snippet gets PIL images. What that
conversion costs is timed on its own (``pil_extra_s``), for the record.
"""

from __future__ import annotations

import ast
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def split_at_call(source: str) -> tuple[ast.Module, ast.Module, ast.Module]:
    """(everything before the pipeline call, the call statement, everything after it)."""
    tree = ast.parse(source)
    index = next(
        i
        for i, node in enumerate(tree.body)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) in ("image", "video")
    )
    parts = (tree.body[:index], tree.body[index : index + 1], tree.body[index + 1 :])
    return tuple(ast.Module(body=body, type_ignores=[]) for body in parts)  # type: ignore[return-value]


def as_trial_calls(call: ast.Module) -> ast.Module:
    """The call statement with ``output_type="np"`` added to the pipeline call, as trials call it."""
    tree = ast.parse(ast.unparse(call))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "pipeline":
            node.keywords.append(ast.keyword(arg="output_type", value=ast.Constant("np")))
    return ast.fix_missing_locations(tree)


def pil_extra_s(scope: dict[str, Any], repeats: int = 5) -> float:
    """How much longer the pipeline's post-processing takes to PIL images than to numpy arrays (0 for video)."""
    import numpy as np
    import torch

    image = scope.get("image")
    if image is None:
        return 0.0
    processor = scope["pipeline"].image_processor
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(127.5).sub(1).cuda()

    def median_s(output_type: str) -> float:
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            processor.postprocess(pixels, output_type=output_type)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return max(0.0, median_s("pil") - median_s("np"))


def main(snippet: str, result: str, warmup: int, timed: int) -> None:
    import torch

    before, call, after = split_at_call(Path(snippet).read_text())
    trial_call = compile(as_trial_calls(call), snippet, "exec")
    torch.cuda.init()
    torch.cuda.reset_peak_memory_stats()
    scope: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(before, snippet, "exec"), scope)
    scope["pipeline"].set_progress_bar_config(disable=True)
    latencies = []
    for i in range(1 + warmup + timed):
        torch.cuda.synchronize()
        start = time.perf_counter()
        exec(trial_call, scope)
        torch.cuda.synchronize()
        if i > warmup:
            latencies.append(time.perf_counter() - start)
    peaks = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    exec(compile(call, snippet, "exec"), scope)
    exec(compile(after, snippet, "exec"), scope)
    Path(result).write_text(
        json.dumps(
            {
                "latency_s": statistics.median(latencies),
                "latencies_s": latencies,
                "pil_extra_s": pil_extra_s(scope),
                "peak_allocated_bytes": peaks[0],
                "peak_reserved_bytes": peaks[1],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
