"""Per-step extrapolation: the arithmetic, what an extrapolated trial records, the spec field, and the summary."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from optuna.trial import TrialState, create_trial

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import CONFIG_ATTR, EXTRAPOLATED_KEY, MEASUREMENT_ATTR, MEMORY_ATTR, REMEASURE_OF_ATTR
from qco_tune.core.records import Measurement
from qco_tune.core.spec import SpecError, apply_overrides, parse_spec
from qco_tune.loop.setup import measured_steps, reference_dir, trial_workload
from qco_tune.search.pareto import summarize
from qco_tune.search.steps import extrapolate, extrapolate_latency, extrapolation_of, is_extrapolated

GIB = 2**30


def test_fixed_part_plus_steps_times_the_step() -> None:
    # FLUX.1-dev bf16 on an H100: 5.36 s for 28 steps at 0.184 s/step leaves 0.208 s of fixed work.
    fixed, step = 5.36 - 28 * 0.184, 0.184
    measured = fixed + 8 * step
    assert extrapolate_latency(measured, step, 8, 28) == pytest.approx(5.36)
    assert extrapolate_latency(measured, step, 8, 8) == pytest.approx(measured)
    assert extrapolate_latency(2.0, 0.5, 4, 2) == pytest.approx(1.0)  # fewer steps works the other way
    with pytest.raises(ValueError, match="positive"):
        extrapolate_latency(1.0, 0.1, 0, 28)
    with pytest.raises(ValueError, match="negative"):
        extrapolate_latency(1.0, -0.1, 8, 28)


def test_an_extrapolated_measurement_keeps_what_it_measured() -> None:
    m = Measurement(
        status="ok",
        device="cuda",
        latency_s=1.7,
        latencies_s=(1.7, 1.8),
        step_time_s=0.15,
        first_call_s=20.0,
        peak_device_bytes=16 * GIB,
    )
    e = extrapolate(m, 8, 28)
    assert e.latency_s == pytest.approx(1.7 + 20 * 0.15) and e.latencies_s == pytest.approx((4.7, 4.8))
    assert e.first_call_s == pytest.approx(23.0)
    assert e.peak_device_bytes == m.peak_device_bytes and e.step_time_s == m.step_time_s
    note = e.extra[EXTRAPOLATED_KEY]
    assert note["measured_steps"] == 8 and note["steps"] == 28 and note["measured_latency_s"] == 1.7
    assert note["fixed_s"] == pytest.approx(1.7 - 8 * 0.15) and note["measured_latencies_s"] == [1.7, 1.8]
    assert is_extrapolated(e) and extrapolation_of(e) == note and not is_extrapolated(m)
    # Stored and read back (as the study stores trials), it is still marked.
    assert is_extrapolated(Measurement.from_dict(e.to_dict()))
    assert extrapolate(m, 28, 28) is m


def test_no_step_time_means_no_extrapolation_and_a_failed_trial() -> None:
    m = Measurement(status="ok", latency_s=1.0, peak_host_bytes=GIB)
    e = extrapolate(m, 2, 4)
    assert e.status == "error" and "no per-step time" in (e.reason or "") and e.latency_s == 1.0
    failed = Measurement(status="oom", reason="CUDA out of memory")
    assert extrapolate(failed, 2, 4).status == "oom" and extrapolate(failed, 2, 4).reason == "CUDA out of memory"


def test_measure_steps_in_the_spec() -> None:
    spec = parse_spec('model = "flux.1-dev"\n[run]\nmeasure_steps = 8\n')
    assert spec.measure_steps == 8 and measured_steps(spec) == 8
    assert trial_workload(spec).steps == 8 and trial_workload(spec, full=True).steps == 28
    assert spec.identity()["measure_steps"] == 8  # a study measured otherwise is not comparable
    assert measured_steps(dataclasses.replace(spec, measure_steps=28)) is None
    assert measured_steps(dataclasses.replace(spec, measure_steps=None)) is None
    # Outputs of different step counts are different references.
    assert reference_dir(spec, trial_workload(spec)) != reference_dir(spec)
    assert reference_dir(spec, trial_workload(spec, full=True)) == reference_dir(spec)
    for bad, message in (("1", "at least 2"), ("29", r"at most workload.steps \(28\)"), ('"8"', "whole number")):
        with pytest.raises(SpecError, match=message) as info:
            parse_spec(f'model = "flux.1-dev"\n[run]\nmeasure_steps = {bad}\n', source="s.toml")
        assert "s.toml, line 3: run.measure_steps" in str(info.value)
    assert apply_overrides(spec, measure_steps="4").measure_steps == 4
    with pytest.raises(SpecError, match="--measure-steps: must be at least 2"):
        apply_overrides(spec, measure_steps="1")


def _trial(number: int, latency: float, gib: float, extra: dict[str, Any] | None = None, **attrs: Any) -> Any:
    m = Measurement(status="ok", device="cuda", latency_s=latency, extra=extra or {})
    user_attrs = {
        CONFIG_ATTR: TrialConfig(compile="regional" if number % 2 else "none").to_dict(),
        MEASUREMENT_ATTR: m.to_dict(),
        MEMORY_ATTR: int(gib * GIB),
        **attrs,
    }
    trial = create_trial(
        state=TrialState.COMPLETE, values=[latency, gib], user_attrs=user_attrs, constraints={"vram": gib - 16}
    )
    trial.number = number
    return trial


def test_a_re_measured_trial_supersedes_its_extrapolation() -> None:
    note = {EXTRAPOLATED_KEY: {"measured_steps": 8, "steps": 28, "step_time_s": 0.1}}
    trials = [
        _trial(0, 3.0, 10, note),
        _trial(1, 2.0, 12, note),
        # Measured again at 28 steps, trial 1 is slower than extrapolated: 0 comes back onto the front.
        _trial(2, 3.5, 12, None, **{REMEASURE_OF_ATTR: 1}),
    ]
    summary = summarize(trials, 16 * GIB)
    categories = {r.number: r.category for r in summary.rows}
    assert categories == {0: "front", 1: "superseded", 2: "dominated"}
    assert summary.best is not None and summary.best.number == 0
    before = summarize(trials[:2], 16 * GIB)
    assert [r.number for r in before.front] == [1, 0]


def test_compile_cache_is_a_strict_run_only_switch() -> None:
    spec = parse_spec('model = "flux.1-dev"\n[run]\ncompile_cache = false\n')
    assert spec.compile_cache is False and parse_spec('model = "flux.1-dev"\n').compile_cache is True
    # Switching it does not make a study's results incomparable (it changes cold starts, not what is measured).
    assert spec.identity() == dataclasses.replace(spec, compile_cache=True).identity()
    with pytest.raises(SpecError, match=r"run\.compile_cache: expected true or false"):
        parse_spec('model = "flux.1-dev"\n[run]\ncompile_cache = "no"\n')
    assert apply_overrides(spec, compile_cache="true").compile_cache is True
    with pytest.raises(SpecError, match="--compile-cache: expected true or false"):
        apply_overrides(spec, compile_cache="maybe")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--measure-steps", "1"], "--measure-steps: must be at least 2"),
        (["--measure-steps", "40", "--steps", "28"], "--measure-steps: must be at most workload.steps (28)"),
        (["--compile-cache", "sometimes"], "--compile-cache: expected true or false"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path: Any, args: list[str], fragment: str) -> None:
    from click.testing import CliRunner

    from qco_tune.cli.main import cli

    result = CliRunner().invoke(cli, ["run", *args, "--storage", f"sqlite:///{tmp_path}/q.db"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert "Traceback" not in result.output
