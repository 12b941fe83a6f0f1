"""Exporting is pure: rendering and reading configurations import neither torch, diffusers nor optuna."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "textual", "optuna", "sqlalchemy")


def test_rendering_imports_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import qco_tune\n"
        "from qco_tune.core.config import TrialConfig\n"
        "from qco_tune.core.studyspec import Workload\n"
        "from qco_tune.export.formats import render_toml\n"
        "from qco_tune.export.render import render_python\n"
        "from qco_tune.loop.export_study import prepare_export\n"
        "from qco_tune.core.presets import get_preset\n"
        "config = TrialConfig(quantization=(('transformer', 'torchao_fp8dq'),), compile='full', offload='group_leaf')\n"
        "render_python(config, model=get_preset('flux.1-dev').model_info(), workload=Workload())\n"
        "qco_tune.load_config(json.loads(json.dumps(config.to_dict())))\n"
        "render_toml(config)\n"
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
