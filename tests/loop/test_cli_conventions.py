"""The conventions of the Optuna and Hugging Face CLIs: ``--study-name``, ``-f json``, ``OPTUNA_STORAGE``,
``delete``, plain JSON (one type per field) and exit statuses (2: bad input, 1: a failure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from qco_tune.cli.main import cli


def _study(url: str, name: str, latencies: tuple[float, float] = (5.0, 6.0)) -> None:
    """A stored qco-tune study: the reference (identical to itself: infinite PSNR) and an NF4 trial."""
    import optuna
    from optuna.trial import TrialState

    from qco_tune.core.config import TrialConfig
    from qco_tune.core.spec import spec_for_model
    from qco_tune.core.studyspec import spec_to_dict

    study = optuna.create_study(study_name=name, storage=url, directions=["minimize", "minimize"])
    study.set_user_attr("qco.spec", spec_to_dict(spec_for_model("flux.1-dev")))
    study.set_user_attr("qco.gpu", "NVIDIA H200")
    nf4 = TrialConfig(quantization=(("transformer", "bnb_nf4"),))
    for config, latency, psnr, baseline in ((TrialConfig(), latencies[0], float("inf"), "reference"),
                                            (nf4, latencies[1], 34.5, None)):  # fmt: skip
        m = {"status": "ok", "device": "cuda", "latency_s": latency, "psnr_db": psnr, "latent_cosine": 0.999}
        attrs: dict[str, Any] = {"qco.config": config.to_dict(), "qco.measurement": m, "qco.memory_bytes": 2**30}
        if baseline:
            attrs["qco.baseline"] = baseline
        trial = optuna.trial.create_trial(
            state=TrialState.COMPLETE, values=[latency, 1.0], user_attrs=attrs, constraints={"vram": -1.0}
        )
        study.add_trial(trial)


@pytest.fixture
def url(tmp_path: Path) -> str:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path}/q.db"
    _study(storage, "h100", (5.0, 6.0))
    _study(storage, "h200", (4.0, 3.0))
    return storage


def _invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


def _plain_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"not plain JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _one_error_line(result: Result, status: int, *fragments: str) -> str:
    assert result.exit_code == status, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# -- --study-name -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "worker"])
def test_study_name_is_an_alias_of_study(command: str) -> None:
    for alias in ("--study", "--study-name"):
        opts = {o.name: o for o in cli.commands[command].params if isinstance(o, click.Option)}
        option = next(o for o in opts.values() if alias in o.opts)
        assert set(option.opts) == {"--study", "--study-name"}


def test_run_takes_the_study_name_from_study_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qco_tune.loop.study
    from qco_tune.loop.context import StudyError

    def refuse(spec: Any, **kwargs: Any) -> None:  # stops before the machine is probed: the name is what counts
        raise StudyError(f"study {spec.name!r} reached run_study")

    monkeypatch.setattr(qco_tune.loop.study, "run_study", refuse)
    result = _invoke("run", "--study-name", "named-here", "--storage", f"sqlite:///{tmp_path}/q.db")
    _one_error_line(result, 2, "study 'named-here' reached run_study")


def test_show_and_delete_take_the_study_as_study_name_too(url: str) -> None:
    by_option = _invoke("show", "--study-name", "h100", "-f", "json", "--storage", url)
    assert by_option.exit_code == 0 and _plain_json(by_option.output)["study"] == "h100", by_option.output
    differ = _invoke("show", "h100", "--study-name", "h200", "--storage", url)
    assert differ.exit_code == 2 and "STUDY 'h100' and --study-name 'h200' differ" in differ.output
    assert "name the study" in _invoke("show", "--storage", url).output
    assert _invoke("delete", "--study-name", "h200", "-y", "--storage", url).exit_code == 0
    assert _names(url) == ["h100"]


# -- -f/--format json ------------------------------------------------------------------------------------


def test_show_format_json_and_its_json_alias_agree_and_are_plain(url: str) -> None:
    by_format = _invoke("show", "h100", "-f", "json", "--storage", url)
    by_flag = _invoke("show", "h100", "--json", "--storage", url)
    assert by_format.exit_code == 0 and by_flag.exit_code == 0, by_format.output
    data = _plain_json(by_format.output)
    assert data == _plain_json(by_flag.output)
    assert data["study"] == "h100" and data["gpu"] == "NVIDIA H200" and data["best_latency_s"] == 5.0
    psnr = {t["number"]: (t["measurement"]["psnr_db"], t["measurement"]["identical"]) for t in data["trials"]}
    assert psnr == {0: (None, True), 1: (34.5, False)}


def test_list_format_json_gives_each_study_the_overview_of_show(url: str) -> None:
    result = _invoke("list", "--format", "json", "--storage", url)
    assert result.exit_code == 0, result.output
    data = _plain_json(result.output)
    assert data["storage"] == url and [s["study"] for s in data["studies"]] == ["h100", "h200"]
    shown = _plain_json(_invoke("show", "h200", "-f", "json", "--storage", url).output)
    overview = {k: v for k, v in shown.items() if k not in ("trials", "memory_model")}
    assert data["studies"][1] == overview
    assert overview["best_latency_s"] == 3.0 and overview["counts"]["feasible"] == 2


def test_compare_format_json_lines_up_the_configurations(url: str) -> None:
    result = _invoke("compare", "h100", "h200", "-f", "json", "--storage", url)
    assert result.exit_code == 0, result.output
    data = _plain_json(result.output)
    assert data["reference"] == "h100" and [s["study"] for s in data["studies"]] == ["h100", "h200"]
    by_config = {c["configuration"]: c for c in data["configurations"]}
    nf4 = by_config["transformer:bnb_nf4"]["results"]
    assert [(r["study"], r["trial"], r["latency_s"]) for r in nf4] == [("h100", 1, 6.0), ("h200", 1, 3.0)]
    assert nf4[0]["speedup"] is None and nf4[1]["speedup"] == pytest.approx(2.0)
    assert data["median_speedups"]["h200"] == pytest.approx((5.0 / 4.0 + 2.0) / 2)


def test_tables_stay_the_default(url: str) -> None:
    result = _invoke("list", "--storage", url)
    assert result.exit_code == 0 and "studies in" in result.output and not result.output.startswith("{")
    bad = _invoke("list", "-f", "yaml", "--storage", url)
    assert bad.exit_code == 2 and "'yaml' is not one of 'table', 'json'" in bad.output, bad.output


# -- OPTUNA_STORAGE --------------------------------------------------------------------------------------


def test_optuna_storage_is_read_when_qco_storage_is_unset(url: str, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path}/other.db"
    by_optuna = _invoke("list", "-f", "json", env={"QCO_STORAGE": "", "OPTUNA_STORAGE": url})
    assert _plain_json(by_optuna.output)["storage"] == url
    by_qco = _invoke("list", "-f", "json", env={"QCO_STORAGE": other, "OPTUNA_STORAGE": url})
    assert _plain_json(by_qco.output) == {"storage": other, "studies": []}


# -- delete ----------------------------------------------------------------------------------------------


def test_delete_an_unknown_study_is_one_line_and_status_2(url: str) -> None:
    _one_error_line(_invoke("delete", "nope", "-y", "--storage", url), 2, "no study named 'nope'", "h100")


def test_delete_asks_first_and_removes_the_study_and_its_folders(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qco_tune.core.compile_artifacts import artifacts_root, study_artifacts_dir
    from qco_tune.core.paths import study_compile_cache_dir

    monkeypatch.setenv("QCO_CACHE", str(tmp_path / "cache"))
    artefacts = study_artifacts_dir(artifacts_root(url), "h100")
    cache = study_compile_cache_dir("h100")
    kept = study_artifacts_dir(artifacts_root(url), "h200")
    for folder in (artefacts, cache, kept):
        folder.mkdir(parents=True)
        (folder / "x").write_text("x")
    refused = _invoke("delete", "h100", "--storage", url, stdin="n\n")
    assert refused.exit_code == 1 and "delete study 'h100' and its 2 trial(s)" in refused.output
    assert artefacts.exists() and _names(url) == ["h100", "h200"]
    done = _invoke("delete", "h100", "--storage", url, stdin="y\n")
    assert done.exit_code == 0 and "deleted study 'h100' (2 trial(s))" in done.output, done.output
    assert _names(url) == ["h200"] and not artefacts.exists() and not cache.exists() and kept.exists()
    assert f"removed {artefacts}" in done.output and f"removed {cache}" in done.output
    assert _invoke("delete", "h200", "-y", "--storage", url).exit_code == 0 and _names(url) == []


def test_delete_keeps_artefacts_that_another_storage_may_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qco_tune.core.compile_artifacts import artifacts_root, study_artifacts_dir
    from qco_tune.loop.deletion import study_folders

    monkeypatch.setenv("QCO_CACHE", str(tmp_path / "cache"))
    pg = "postgresql+psycopg://u@db/qco"
    shared = study_artifacts_dir(artifacts_root(pg), "s")
    shared.mkdir(parents=True)
    assert study_folders("s", pg, None) == ([], [shared])
    assert study_folders("s", pg, artifacts_root(pg)) == ([shared], [])  # named: the study's own


def _names(url: str) -> list[str]:
    import optuna

    return sorted(s.study_name for s in optuna.get_all_study_summaries(url, include_best_trial=False))


# -- exit statuses ----------------------------------------------------------------------------------------


def _failing(exc: BaseException) -> click.Command:
    from qco_tune.cli.common import friendly

    @click.command()
    @friendly
    def command() -> None:
        raise exc

    return command


def test_bad_input_is_status_2_and_a_failure_status_1_both_one_line() -> None:
    from qco_tune.core.errors import InputError
    from qco_tune.store.storage import StorageError

    bad = CliRunner().invoke(_failing(InputError("not a size: 'lots'")), [])
    assert _one_error_line(bad, 2) == "error: not a size: 'lots'"
    failed = CliRunner().invoke(_failing(StorageError("cannot open storage x: refused")), [])
    assert _one_error_line(failed, 1) == "error: cannot open storage x: refused"


def test_a_library_value_error_is_reported_as_unexpected_not_as_bad_input() -> None:
    result = CliRunner().invoke(_failing(ValueError("math domain error")), [])
    line = _one_error_line(result, 1, "ValueError: math domain error")
    assert "unexpected" in result.output and "QCO_DEBUG=1" in result.output and line.startswith("error: ValueError")


def test_bad_input_from_the_commands_is_status_2(url: str) -> None:
    _one_error_line(_invoke("compare", "h100", "h100", "--storage", url), 2, "compared only once")
    _one_error_line(_invoke("show", "nope", "-f", "json", "--storage", url), 2, "no study named 'nope'")


def test_the_tui_shows_a_background_runs_last_log_line_without_its_timestamp(tmp_path: Path) -> None:
    import subprocess
    import sys

    from qco_tune.tui.runs import BackgroundRun

    log = tmp_path / "run.log"
    log.write_text(
        "2026-12-01T18:54:31+0000 INFO trial 4 of 8 (study trial #12) · bf16\n"
        "2026-12-01T18:54:40+0000 WARNING ✗ #12 oom: out of memory\n"
    )
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    run = BackgroundRun(tmp_path / "spec.toml", "s", "sqlite://", process, log)  # type: ignore[arg-type]
    # The text of an INFO line; a warning keeps its level (and its time: when it went wrong).
    assert run.tail(2).splitlines() == [
        "trial 4 of 8 (study trial #12) · bf16",
        "2026-12-01T18:54:40+0000 WARNING ✗ #12 oom: out of memory",
    ]
