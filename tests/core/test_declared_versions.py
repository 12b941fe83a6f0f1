"""What pyproject.toml declares: every library the code imports, floors that the GPU versions meet, ruff pinned."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CONSTRAINTS = REPO / "studies" / "constraints-h200.txt"
README = (REPO / "README.md").read_text()


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_levels() -> set[str]:
    found = set()
    for path in (REPO / "qco_tune").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"qco_tune", "__future__"}


def test_every_imported_library_is_declared() -> None:
    declared = {_norm(r.name) for r in _requirements()}
    providers = metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_imported_top_levels()):
        dists = {_norm(d) for d in providers.get(module, [module])}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"
    assert "numpy" in declared and "huggingface-hub" in declared


def _pins() -> dict[str, Version]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_norm(name)] = Version(version)
    return pins


def test_the_gpu_versions_meet_the_declared_floors() -> None:
    pins = _pins()
    assert pins["torch"] == Version("2.11.0") and pins["diffusers"] == Version("0.42.1")
    assert set(pins) >= {"torch", "triton", "diffusers", "transformers", "accelerate", "bitsandbytes", "torchao"}
    for requirement in _requirements():
        name = _norm(requirement.name)
        if name in pins:
            assert requirement.specifier.contains(pins[name]), (str(requirement), str(pins[name]))
    floors = {_norm(r.name): r.specifier for r in _requirements()}
    # The releases before these lack what the code uses (pyproject.toml says which).
    assert not floors["diffusers"].contains("0.39.0") and floors["diffusers"].contains("0.40.0")
    assert not floors["torchao"].contains("0.13.0") and not floors["bitsandbytes"].contains("0.45.5")


def test_ruff_is_pinned_and_the_readme_names_the_constraints() -> None:
    (ruff,) = [r for r in _requirements() if r.name == "ruff"]
    assert str(ruff.specifier).startswith("==")
    assert "pip install -c studies/constraints-h200.txt" in README
    # CI runs the README's test command: it lints and type-checks too.
    command = README.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert "ruff check qco_tune tests" in command and "mypy" in command and "lint-imports" in command
    assert "<!-- test-command -->" in (REPO / ".ci" / "run").read_text()
