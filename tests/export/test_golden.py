"""Golden files: exported snippets for the guide's recipes and the other knobs, checked by ruff.

To regenerate after an intended change of the exporter, run
``QCO_UPDATE_GOLDEN=1 python -m pytest tests/export/test_golden.py`` and review the diff of
``tests/export/golden/``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from export_cases import CASES, Case
from export_helpers import ruff_problems

from qco_tune.export.render import render_python

GOLDEN = Path(__file__).parent / "golden"
UPDATE_ENV = "QCO_UPDATE_GOLDEN"


def render_case(case: Case) -> str:
    return render_python(
        case.config,
        model=case.model,
        workload=case.workload,
        dtype=case.dtype,
        model_ref=case.model_ref,
        header=case.header,
        compile_artifacts=case.compile_artifacts,
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_golden(case: Case) -> None:
    source = render_case(case)
    path = GOLDEN / f"{case.name}.py"
    if os.environ.get(UPDATE_ENV):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(source, encoding="utf-8")
    assert path.exists(), f"no golden file {path.name}: run with {UPDATE_ENV}=1"
    assert source == path.read_text(encoding="utf-8"), f"{path.name} changed: review, then run with {UPDATE_ENV}=1"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_snippet_is_clean_and_formatted(case: Case) -> None:
    source = render_case(case)
    ast.parse(source)
    assert ruff_problems(source) == ""


def test_header_text_cannot_become_code() -> None:
    """A study name and a failure reason holding newlines and code stay inside comments."""
    case = next(c for c in CASES if c.name == "failed_trial_warning_quotes")
    tree = ast.parse(render_case(case))
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not any("system" in c for c in calls)
    # The quiet preamble's own ``import os`` is the only one: the header added none.
    assert [n.lineno for n in tree.body if isinstance(n, ast.Import) and n.names[0].name == "os"] == [
        1 + next(i for i, line in enumerate(render_case(case).splitlines()) if line == "import os")
    ]
    assert case.workload.prompt in [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert case.model_ref in [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]


def test_best_trial_header_says_so() -> None:
    source = render_case(CASES[0])
    head = " ".join(line.removeprefix("# ") for line in source.split("import torch")[0].splitlines())
    assert "the fastest feasible trial" in head
    assert "5.840 s per call" in head and "peak VRAM 16.1 GiB" in head
    assert "NVIDIA H100 80GB HBM3" in head and "2026-11-24" in head
