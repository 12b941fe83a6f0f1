"""The knob table tool on four lines of the H200 knob run (a copy of lines 1-3 and 13 of
``studies/results/knobs-h200/cases.jsonl``), named against the real knob suite's cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qco_tune.tools import knob_table

DATA = Path(__file__).parent / "data" / "knobs-h200-partial.jsonl"
SUITE = Path(__file__).parents[1] / "gpu" / "test_gpu_knobs.py"


def test_the_table_names_each_line_by_its_case_and_lists_the_cases_not_run(tmp_path: Path) -> None:
    assert knob_table.main([str(DATA), str(tmp_path / "out"), "--cases", str(SUITE)]) == 0
    text = (tmp_path / "out" / "README.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) - {"case", "---|---|---|---|---|---|---|---|"} == {
        "reference",
        "quant-bnb_nf4",
        "quant-bnb_fp4",
        "compile-regional",
    }
    assert "| inf |" in rows["reference"]  # identical to itself
    assert "| 0.0052 | 4.34 | 3.24 | 49.0 | 104.3 |" in rows["compile-regional"]  # s/step, peaks, PSNR, cold start
    assert "| - | 2.30 |" in rows["quant-bnb_nf4"]  # NVML reported nothing: no device peak, the allocator's
    not_run = text.split("Not run yet on the GPU")[1]
    for case in ("quant-bnb_int8", "compile-full-fullgraph", "offload-model", "fused-qkv", "quanto-fp8-group-leaf"):
        assert f"`{case}`" in not_run
    assert "`compile-regional`" not in not_run
    assert (tmp_path / "out" / "cases.jsonl").read_text() == DATA.read_text()


def test_a_line_that_names_its_case_keeps_that_name(tmp_path: Path) -> None:
    line = json.loads(DATA.read_text().splitlines()[1])
    (tmp_path / "cases.jsonl").write_text(json.dumps({**line, "case": "my-case"}) + "\n")
    assert knob_table.main([str(tmp_path / "cases.jsonl"), str(tmp_path), "--cases", str(tmp_path / "none.py")]) == 0
    assert "| my-case | text_encoder:bnb_nf4" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize(("content", "message"), [("{not json\n", "line 1: not JSON"), ("[1]\n", "not a knob case")])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str) -> None:
    (tmp_path / "cases.jsonl").write_text(content)
    assert knob_table.main([str(tmp_path / "cases.jsonl"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
