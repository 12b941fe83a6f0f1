"""The fast-path proof tool's dry run (``--tiny``): real trial children of the tiny FLUX preset on the CPU,
where the space excludes the float8 and NF4 cases (recorded with its reasons), resumed and interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qco_tune.tools import fast_path_proof

pytestmark = pytest.mark.slow
COMMAND = (sys.executable, "-m", "qco_tune.tools.fast_path_proof")


def proof(out: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QCO_CACHE": str(cache)}
    return subprocess.run(
        [*COMMAND, str(out), "--tiny", *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def test_the_proof_records_each_case_and_a_rerun_skips_the_finished_ones(tmp_path: Path, qco_cache_dir: Path) -> None:
    out = tmp_path / "proof"
    first = proof(out, qco_cache_dir, "--only", "a,c", "--timed-calls", "1")
    assert first.returncode == 0, first.stderr + first.stdout
    results = json.loads((out / "results.json").read_text())["cases"]
    assert set(results) == {"reference", "a", "c"}  # the reference always: every PSNR is against it
    ref = results["reference"]
    assert ref["status"] == "ok" and ref["latency_s"] > 0 and ref["s_per_step"] > 0 and ref["first_call_s"] > 0
    assert ref["speedup_vs_a"] is None  # a did not run here
    # The CPU's space has no compile recipe and no float8: recorded with the space's reasons, not run.
    assert results["a"]["status"] == "excluded" and "recipe" in results["a"]["reason"]
    assert results["c"]["status"] == "excluded" and "float8" in results["c"]["reason"]
    assert results["c"]["limit_gib"] == 16 and results["c"]["predicted_device_gib"] > 0
    assert "c: memory model:" in first.stdout
    readme = (out / "README.md").read_text()
    assert "| reference | bf16 | ok |" in readme and "Not recorded yet: b, d." in readme

    again = proof(out, qco_cache_dir, "--only", "b", "--timed-calls", "1")
    assert again.returncode == 0, again.stderr + again.stdout
    assert "reference: recorded already, skipped" in again.stdout
    assert set(json.loads((out / "results.json").read_text())["cases"]) == {"reference", "a", "b", "c"}


def test_an_interrupted_command_keeps_what_finished(tmp_path: Path, qco_cache_dir: Path) -> None:
    out = tmp_path / "proof"
    env = {**os.environ, "QCO_CACHE": str(qco_cache_dir)}
    proc = subprocess.Popen(
        [*COMMAND, str(out), "--tiny", "--only", "b"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("reference: bf16 on tiny-flux"):  # its trial child has started
            proc.send_signal(signal.SIGINT)  # as ``timeout -s INT`` stops a command
            break
    rest = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, rest
    assert "interrupted: the finished cases are kept" in rest
    results = json.loads((out / "results.json").read_text())["cases"]
    assert "reference" not in results  # cut off: nothing claimed for it, so a rerun runs it


def test_the_speed_ups_are_over_case_a() -> None:
    results = {
        "a": {"status": "ok", "latency_s": 4.2, "s_per_step": 0.14},
        "c": {"status": "ok", "latency_s": 3.0, "s_per_step": 0.1},
        "d": {"status": "excluded", "latency_s": None},
    }
    fast_path_proof.speedups(results)
    assert results["c"]["speedup_vs_a"] == pytest.approx(1.4) and results["c"]["step_speedup_vs_a"] == 1.4
    assert results["a"]["speedup_vs_a"] == 1.0 and results["d"]["speedup_vs_a"] is None


def test_the_memory_prediction_is_calibrated_on_the_cases_measured_before() -> None:
    from fake_machines import H200

    from qco_tune.core.records import Measurement

    cases = {c.name: c for c in fast_path_proof.cases(H200, tiny=False)}
    plain = fast_path_proof.prediction(cases["c"], H200, fast_path_proof.CAP)
    assert plain["calibrated_on"] == 0 and plain["device_gib"] > 10

    def measured(name: str) -> dict[str, object]:
        # Each case measured 10% under what the uncalibrated model predicts for it.
        peak = fast_path_proof.prediction(cases[name], H200, None)["device_gib"] * 0.9 * 2**30
        m = Measurement(status="ok", device="cuda", latency_s=1.0, peak_device_bytes=int(peak))
        return {"config": cases[name].config.to_dict(), "measurement": m.to_dict()}

    calibrated = fast_path_proof.prediction(
        cases["c"], H200, fast_path_proof.CAP, [measured(n) for n in ("reference", "a", "b")]
    )
    assert calibrated["calibrated_on"] == 3 and "calibrated on 3" in calibrated["detail"]
    assert calibrated["device_gib"] < plain["device_gib"]
