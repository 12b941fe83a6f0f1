"""The tests' own isolation (``tests/conftest.py``): the user's cache and the system's temporary folder stay clean."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from qco_tune.core.paths import cache_dir


def test_the_cache_and_temporary_files_of_a_test_are_its_own(private_cache_and_temp: Path, qco_cache_dir: Path) -> None:
    assert cache_dir() == qco_cache_dir
    assert Path(tempfile.gettempdir()) == private_cache_and_temp
    with tempfile.TemporaryDirectory(prefix="qco-trial-") as folder:
        assert Path(folder).parent == private_cache_and_temp
    # A child process (a trial, `qco-tune run` from the TUI) inherits both.
    code = (
        "import tempfile; from qco_tune.core.paths import cache_dir; print(cache_dir()); print(tempfile.gettempdir())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ.copy()
    )
    assert out.stdout.split() == [str(qco_cache_dir), str(private_cache_and_temp)]
