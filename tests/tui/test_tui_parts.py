"""Pure parts of the TUI: the trials filter, the plot canvas, background runs' bookkeeping, export text."""

from __future__ import annotations

from pathlib import Path

import pytest

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Measurement
from qco_tune.search.pareto import TrialRow
from qco_tune.tui.filters import TrialFilter
from qco_tune.tui.runs import study_name_of
from qco_tune.tui.widgets.canvas import PlotPoint, draw_scatter

GIB = 2**30


def row(
    number: int, category: str = "front", config: TrialConfig | None = None, baseline: str | None = None
) -> TrialRow:
    m = Measurement(status="ok", latency_s=1.0)
    return TrialRow(number, category, config or TrialConfig(), m, 1.0, GIB, baseline, None, None)  # type: ignore[arg-type]


def test_filter_states_knobs_and_words() -> None:
    nf4 = TrialConfig(quantization=(("transformer", "bnb_nf4"),), compile="regional")
    rows = [row(0, "front", nf4), row(1, "failed"), row(2, "dominated", baseline="reference"), row(3, "infeasible")]
    pick = lambda text: [r.number for r in rows if TrialFilter.parse(text).matches(r)]  # noqa: E731
    assert pick("") == [0, 1, 2, 3]
    assert pick("failed") == [1] and pick("state:failed,infeasible") == [1, 3]
    assert pick("feasible") == [0, 2]
    assert pick("compile=regional") == [0] and pick("compile!=regional") == [1, 2, 3]
    assert pick("transformer=bnb_nf4") == [0] and pick("quant=bnb_nf4") == [0]
    assert pick("recipe=reference") == [2] and pick("nf4") == [0]
    assert pick("feasible compile=none") == [2]
    assert TrialFilter.parse("state:bogus").errors == ("bogus",)


def test_filter_by_a_setting_matches_its_default_too() -> None:
    tiled = TrialConfig(vae_tiling=True, attention_backend="_native_cudnn")
    rows = [row(0, "front", tiled), row(1, "front", TrialConfig())]
    pick = lambda text: [r.number for r in rows if TrialFilter.parse(text).matches(r)]  # noqa: E731
    assert pick("vae_tiling=true") == [0] and pick("vae_tiling=false") == [1]
    assert pick("attention_backend=native") == [1] and pick("attention_backend!=native") == [0]


def test_state_cycle_keeps_knob_words() -> None:
    f = TrialFilter.parse("compile=regional")
    seen = []
    for _ in range(7):
        f = f.next_state()
        seen.append(f.text)
    assert seen[0] == "state:feasible compile=regional"
    assert seen[-1] == "compile=regional"  # back to every state


def points() -> list[PlotPoint]:
    return [
        PlotPoint(0, 2 * GIB, 9.0, "front"),
        PlotPoint(1, 10 * GIB, 3.0, "front", label="reference"),
        PlotPoint(2, 12 * GIB, 6.0, "dominated"),
        PlotPoint(3, 20 * GIB, 2.0, "infeasible"),
        PlotPoint(4, 5 * GIB, None, "failed"),
    ]


def test_canvas_places_points_budget_and_labels() -> None:
    layout = draw_scatter(points(), 60, 16, budget=16 * GIB, fronts=[[0, 1]], selected=1)
    text = "\n".join(line.plain for line in layout.lines)
    assert "budget 16.0 GiB" in text and "reference" in text and "fail" in text
    assert "┊" in text and any(0x2800 <= ord(ch) <= 0x28FF for ch in text)  # budget line, braille front
    (c0, r0), (c1, r1) = layout.positions[0], layout.positions[1]
    assert c0 < c1 and r0 < r1  # less memory to the left, slower higher up
    assert layout.positions[4][1] == 0  # failed: top strip
    assert layout.nearest(c1, r1) == 1
    assert layout.step(1, 1, 0) in (2, 3)  # right of 1


def test_canvas_too_small_and_empty() -> None:
    assert "enlarge" in draw_scatter(points(), 10, 4).lines[0].plain
    assert "no measured trial" in "".join(t.plain for t in draw_scatter([], 40, 10).lines)


def test_study_name_of_spec(tmp_path: Path) -> None:
    named = tmp_path / "a.toml"
    named.write_text('name = "my-study"\nmodel = "tiny-flux"\n')
    assert study_name_of(named) == "my-study"
    broken = tmp_path / "broken.toml"
    broken.write_text("name = ")
    assert study_name_of(broken) == "broken"


def test_json_fallback_without_a_spec(tmp_path: Path) -> None:
    from qco_tune.search.pareto import summarize
    from qco_tune.store.studydata import Stamp, StoredTrial, build_study
    from qco_tune.tui.exporting import export_text, write_export

    config = TrialConfig(compile="regional")
    trial = StoredTrial(0, "COMPLETE", [1.0, 1.0], {"qco.config": config.to_dict()})
    study = build_study("no-spec", {}, [trial], Stamp())
    assert summarize([trial]).rows[0].config == config
    result = export_text(study, 0)
    assert result.fallback and result.language == "json" and '"compile": "regional"' in result.text
    path = write_export(result, tmp_path / "out" / "c.json")
    assert path.read_text() == result.text
    with pytest.raises(FileExistsError):
        write_export(result, path)
