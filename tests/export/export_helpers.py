"""Helpers of the export tests: ruff as a checker of snippets, and the tiny workload."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from qco_tune.core.studyspec import Workload

RUFF_RULES = "E,F,W,I,B,UP,SIM,RUF"
RUFF_IGNORE = "RUF001,RUF002,RUF003"
"""The project's own rule selection, applied to snippets in isolation (a user's project has its own config).
Like the project, it allows look-alike Unicode characters: a prompt may hold typographic quotes or any script."""
TINY_WORKLOAD = Workload(height=64, width=64, steps=2, guidance=3.5, max_sequence_length=32)
"""The embedded default study's workload: a tiny pipeline call takes well under a second on a CPU."""


def ruff_problems(source: str) -> str:
    """What ``ruff check`` and ``ruff format`` find wrong with ``source`` (empty when it is clean and formatted).

    Both run isolated from this project's configuration, at ruff's defaults (88 columns), with the
    project's rule selection: a pasted snippet must pass in a project that has no ruff config.
    """
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    check = subprocess.run(
        [
            ruff,
            "check",
            "--isolated",
            "--select",
            RUFF_RULES,
            "--ignore",
            RUFF_IGNORE,
            "--output-format",
            "concise",
            "--stdin-filename",
            "x.py",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
    )
    formatted = subprocess.run(
        [ruff, "format", "--isolated", "--diff", "--stdin-filename", "x.py", "-"],
        input=source,
        capture_output=True,
        text=True,
    )
    problems = check.stdout if check.returncode else ""
    if formatted.returncode:
        problems += formatted.stdout + formatted.stderr
    return problems
