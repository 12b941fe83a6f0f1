"""The replay benchmark's machinery on small synthetic grids: hypervolume, charging, JSON, bad input."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from qco_tune.bench import report
from qco_tune.bench import search as bench
from qco_tune.bench.grid import (
    Grid,
    GridError,
    GridRecord,
    SyntheticShape,
    append_record,
    grid_of,
    in_grid,
    load_grid,
    recorded_keys,
    synthetic_grid,
)
from qco_tune.cli.main import cli
from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Measurement
from qco_tune.search.frontier import hypervolume_2d, pareto_points

GIB = 2**30
NF4 = (("transformer", "bnb_nf4"),)


@pytest.fixture(scope="module")
def synthetic() -> Grid:
    return synthetic_grid(0)


def record(config: TrialConfig, latency: float | None, memory_gib: float | None, seconds: float) -> GridRecord:
    if latency is None:
        m = Measurement(status="oom", device="cuda", reason="out of memory")
        return GridRecord(config, m, seconds, None, {"gpu": "test"})
    memory = int(memory_gib * GIB) if memory_gib is not None else None
    m = Measurement(status="ok", device="cuda", latency_s=latency, peak_device_bytes=memory)
    return GridRecord(config, m, seconds, memory, {"gpu": "test"})


# Four configurations: the front is (1 s, 3 GiB) and (2 s, 1 GiB); one is dominated, one failed.
FRONT_FAST = TrialConfig(quantization=NF4, compile="regional")
FRONT_SMALL = TrialConfig(quantization=NF4, offload="model")
DOMINATED = TrialConfig()
FAILED = TrialConfig(compile="regional")


@pytest.fixture
def small(synthetic: Grid) -> Grid:
    records = [
        record(DOMINATED, 3.0, 3.5, 10.0),
        record(FAILED, None, None, 5.0),
        record(FRONT_FAST, 1.0, 3.0, 40.0),
        record(FRONT_SMALL, 2.0, 1.0, 20.0),
    ]
    return dataclasses.replace(grid_of(records, synthetic), budget_bytes=4 * GIB, note="")


# -- hypervolume ------------------------------------------------------------------------------------------


def test_the_hypervolume_of_a_known_front() -> None:
    front = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    assert hypervolume_2d(front, (4.0, 4.0)) == pytest.approx(3 + 2 + 1)
    # Dominated points, repeats and points beyond the reference add nothing.
    assert hypervolume_2d([*front, (3.0, 3.0), (2.0, 2.0), (5.0, 0.5), (0.5, 4.5)], (4.0, 4.0)) == pytest.approx(6)
    assert hypervolume_2d([], (4.0, 4.0)) == 0.0
    assert pareto_points([(2.0, 2.0), (1.0, 3.0), (2.5, 2.0), (3.0, 1.0)]) == [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]


def test_the_reference_point_is_fixed_by_the_grids_feasible_records(small: Grid) -> None:
    assert bench.reference_point(small, 4 * GIB) == pytest.approx((3.0 * 1.1, 3.5 * GIB * 1.1))
    # Under a smaller budget the 3.5 GiB and 3 GiB records do not count.
    assert bench.reference_point(small, 2 * GIB) == pytest.approx((2.0 * 1.1, 1.0 * GIB * 1.1))
    with pytest.raises(GridError, match=r"no configuration of the grid finished within a 512\.0 MiB budget"):
        bench.reference_point(small, GIB // 2)


# -- replays ------------------------------------------------------------------------------------------------


def test_measuring_the_whole_grid_in_order_reaches_everything_at_the_grids_total(small: Grid) -> None:
    replay = bench.run_replay(small, "exhaustive", 0, small.budget_bytes)
    budget = small.budget_bytes
    full = hypervolume_2d(bench.feasible_points(small, budget), bench.reference_point(small, budget))
    assert replay.seconds == [0.0, 10.0, 15.0, 55.0, 75.0]  # charged in the grid's order, failures too
    assert replay.seconds[-1] == pytest.approx(small.total_seconds) == 75.0
    assert replay.hypervolume[-1] == pytest.approx(full)
    assert replay.seconds_to(full) == 75.0  # the last record completes the front
    # (3.3 - 1) x (3.85 - 3) of 4.555 GiB s: 43 % after the fast configuration.
    assert replay.seconds_to(full * 0.4) == 55.0 and replay.seconds_to(full * 0.5) == 75.0
    assert replay.trials == 4 and replay.at(54.0) == replay.hypervolume[2]


def test_a_replay_answers_with_the_records_and_stops_at_the_whole_front(small: Grid) -> None:
    for sampler in bench.DEFAULT_SAMPLERS:
        replay = bench.run_replay(small, sampler, 1, small.budget_bytes)
        charged = [b - a for a, b in zip(replay.seconds, replay.seconds[1:], strict=False)]
        assert set(charged) <= {10.0, 5.0, 40.0, 20.0}, sampler  # only recorded configurations cost seconds
        assert len(charged) == len(set(charged)) == replay.trials, sampler  # none measured twice
        assert replay.hypervolume == sorted(replay.hypervolume), sampler
        whole = bench.hypervolume_2d([(1.0, 3.0 * GIB), (2.0, GIB)], (3.3, 3.85 * GIB))
        if sampler == "qco":  # falls back on the untried configurations: it always finds the whole front
            assert replay.seconds_to(whole) is not None and replay.hypervolume[-1] == pytest.approx(whole)


def test_replays_are_reproducible_per_seed(small: Grid) -> None:
    for sampler in ("qco", "optuna_default"):
        first = bench.run_replay(small, sampler, 3, small.budget_bytes)
        again = bench.run_replay(small, sampler, 3, small.budget_bytes)
        assert first.seconds == again.seconds, sampler


def test_a_configuration_the_grid_lacks_is_outside_the_space(small: Grid) -> None:
    space = bench.grid_space(small)
    assert space.violations(FRONT_FAST) == []
    assert space.violations(TrialConfig(compile="full")) == [bench.OUTSIDE]
    assert {c.key() for c in space.enumerate()} == set(small.records)


def test_a_grid_with_records_outside_its_own_space_is_refused(small: Grid) -> None:
    foreign = record(TrialConfig(offload="sequential"), 9.0, 0.5, 30.0)  # the grid's space has no sequential
    broken = grid_of([*small.records.values(), foreign], small)
    with pytest.raises(GridError, match="outside its own space"):
        bench.run_bench(broken, ["random"], 1)


def test_the_json_summary_has_the_documented_shape(small: Grid) -> None:
    result = bench.run_bench(small, ["random", "optuna_default", "qco"], 2)
    data = result.to_json()
    assert set(data) == {"grid_gpu_seconds", "samplers"}
    assert data["grid_gpu_seconds"] == 75.0
    assert list(data["samplers"]) == ["random", "optuna_default", "qco"]
    for name, entry in data["samplers"].items():
        assert set(entry) == {"gpu_seconds_to_95"}, name
        value = entry["gpu_seconds_to_95"]
        assert value is None or 0 < value <= 75.0, name
    assert json.loads(json.dumps(data)) == data


def test_the_median_counts_never_as_never() -> None:
    assert bench.median_or_none([10.0, None, 30.0]) == 30.0
    assert bench.median_or_none([10.0, None, None]) is None
    assert bench.median_or_none([4.0, 2.0]) == 3.0


def test_the_table_and_the_plot(small: Grid) -> None:
    result = bench.run_bench(small, ["random", "qco"], 2)
    table = report.format_table(result)
    assert "GPU s to 95%" in table and "\nqco " in table and "75 GPU s to measure them all" in table
    svg = ET.fromstring(report.render_svg(result))
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 2


def test_the_synthetic_grid_has_the_real_grids_shape(synthetic: Grid) -> None:
    assert len(synthetic.records) >= 60
    assert all(in_grid(r.config) for r in synthetic.records.values())
    assert "SYNTHETIC" in synthetic.note
    eager = [r.trial_s for r in synthetic.records.values() if r.config.compile == "none"]
    compiled = [r.trial_s for r in synthetic.records.values() if r.config.compile != "none"]
    assert max(eager) < min(compiled)  # compiling is what makes a trial dear
    assert bench.grid_space(synthetic).enumerate()  # its own space holds it


# -- the file format ------------------------------------------------------------------------------------------


def test_a_grid_file_round_trips_and_grows_by_appending(small: Grid, tmp_path: Path) -> None:
    path = tmp_path / "grid.jsonl"
    first, *rest = small.records.values()
    dataclasses.replace(small, records={first.key: first}).write(path)
    for r in rest:
        append_record(path, r)
    loaded = load_grid(path)
    assert set(loaded.records) == set(small.records) and loaded.total_seconds == small.total_seconds
    assert loaded.spec == small.spec and loaded.model == small.model and loaded.caps == small.caps
    assert recorded_keys(path)[FAILED.key()] == "oom"
    append_record(path, record(FAILED, 2.5, 0.5, 7.0))  # recorded again: the later line wins
    assert load_grid(path).records[FAILED.key()].ok


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such grid file"),
        ("", "empty file, not a grid"),
        ("{not json\n", "line 1: not JSON"),
        ('{"format": "something else"}\n', 'not a qco-tune grid (no "format": "qco-grid" header)'),
        ('{"format": "qco-grid", "version": 99}\n', "grid format version 99"),
        (
            '{"format": "qco-grid", "version": 1, "spec": {"modle": "x"}, "model": {}, "capabilities": {}}\n',
            "bad header",
        ),
        ("HEADER\n", "the grid has no measurements yet"),
        ('HEADER\n{"config": {}, "measurement": {"status": "ok"}, "trial_s": -1}\n', "line 2: bad record: trial_s"),
        ('HEADER\n{"config": {"compile": "sometimes"}, "measurement": {"status": "ok"}, "trial_s": 1}\n', "line 2"),
        ("HEADER\n[1, 2]\n", "line 2: expected a JSON object"),
    ],
)
def test_a_bad_grid_file_is_one_line_and_a_non_zero_exit(
    content: str | None, message: str, small: Grid, tmp_path: Path
) -> None:
    path = tmp_path / "grid.jsonl"
    if content is not None:
        path.write_text(content.replace("HEADER", json.dumps(small.header())))
    result = CliRunner().invoke(cli, ["bench", "search", "--grid", str(path), "--seeds", "1"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samplers", "random,simulated_annealing"], "unknown sampler(s) simulated_annealing"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--budget", "lots"], "not a size"),
        (["--budget", "1MiB"], "no configuration of the grid finished within a 1.0 MiB budget"),
    ],
)
def test_bad_options_are_one_line_and_a_non_zero_exit(
    args: list[str], message: str, small: Grid, tmp_path: Path
) -> None:
    path = tmp_path / "grid.jsonl"
    small.write(path)
    result = CliRunner().invoke(cli, ["bench", "search", "--grid", str(path), *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output


def test_the_command_prints_json_and_writes_the_plot(small: Grid, tmp_path: Path) -> None:
    path, plot = tmp_path / "grid.jsonl", tmp_path / "plot.svg"
    small.write(path)
    args = ["bench", "search", "--grid", str(path), "--seeds", "2", "--samplers", "random,qco", "--json"]
    result = CliRunner().invoke(cli, [*args, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["samplers"]) == {"random", "qco"} and data["grid_gpu_seconds"] == 75.0
    assert ET.parse(plot).getroot().tag.endswith("svg")


def test_the_synthetic_command_writes_a_grid_the_bench_reads(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.jsonl"
    result = CliRunner().invoke(cli, ["bench", "synthetic", str(path), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(load_grid(path).records) >= 60 and "SYNTHETIC" in load_grid(path).note


def test_the_synthetic_grid_prices_each_components_placement() -> None:
    grid = synthetic_grid(0, SyntheticShape(noise=0.0, fail_rate=0.0))
    by_key = {r.config.key(): r for r in grid.records.values()}
    released = [r for r in grid.records.values() if r.config.placement_of("text_encoder_2") == "released"]
    assert released
    for r in released:
        resident = by_key[dataclasses.replace(r.config, placement=()).key()]
        moved = sum(r.config.placement_of(e) == "released" for e in ("text_encoder", "text_encoder_2"))
        # The same offload ("none"), but each released encoder is moved off the GPU on every call.
        assert r.measurement.latency_s == pytest.approx(resident.measurement.latency_s + 0.02 * moved)
