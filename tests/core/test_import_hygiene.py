"""The headless core imports neither torch, diffusers nor textual (nor optuna, which it does not need)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = (
    "core.config",
    "core.spec",
    "search.space",
    "search.memory",
    "core.modelref",
    "core.presets",
    "core.presets.cache",
    "core.workloads",
    "cli.presets",
    "core.compile_artifacts",
    "search.planner",
    "search.trial_cost",
    "search.calibration",
    "search.pareto",
    "search.compare",
    "search.steps",
    "calls.quantconfigs",
    "calls.settings",
    "calls.dynamo",
    "export.render",
)
HEAVY = ("torch", "diffusers", "transformers", "textual", "optuna")


def test_the_core_imports_nothing_heavy() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module('qco_tune.' + name)\n"
        "from qco_tune.core.spec import load_default_spec\n"
        "from qco_tune.core.modelref import resolve_model\n"
        "from qco_tune.search.space import SearchSpace\n"
        "from qco_tune.search.memory import smallest_need\n"
        "from qco_tune.core.records import Capabilities\n"
        "spec = load_default_spec(); model = resolve_model(spec.model, spec.weights); caps = Capabilities()\n"
        "smallest_need(SearchSpace.build(spec, model, caps), model, spec, caps)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert json.loads(result.stdout) == []
