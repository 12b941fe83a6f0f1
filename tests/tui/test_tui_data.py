"""The TUI's headless reader: direct SQL agrees with Optuna's API; bad storages give one-line messages."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from fake_study import fill_fake_study

from qco_tune.search.pareto import TrialRow, _dominates, _front_numbers
from qco_tune.store import studydata as data
from qco_tune.store.studydata import DataError
from qco_tune.store.tables import open_reader


def test_sql_reader_agrees_with_the_optuna_api(two_studies: str) -> None:
    fast, slow = open_reader(two_studies), open_reader(two_studies, optuna_api=True)
    assert [o.name for o in fast.list_studies()] == [o.name for o in slow.list_studies()]
    for name in ("flux-dev-16gib", "flux-dev-16gib-l40s"):
        a, b = fast.load_study(name), slow.load_study(name)
        assert a.summary.rows == b.summary.rows
        assert a.summary.front == b.summary.front
        assert a.summary.speedups == b.summary.speedups
        assert a.overview.counts == b.overview.counts
        assert dict(a.times) == dict(b.times)
        assert a.attrs == b.attrs
    assert fast.list_studies() == [o for o in fast.list_studies()]  # cached by stamp, same answer


def test_overview_counts_best_and_speedup(two_studies: str) -> None:
    study = open_reader(two_studies).load_study("flux-dev-16gib")
    o = study.overview
    assert o.gpu.startswith("FAKE H100") and o.model == "flux.1-dev" and o.budget_bytes == 16 * 2**30
    assert o.counts.running == 1 and o.counts.failed >= 1 and o.counts.total == 43
    assert o.best_number == study.summary.best.number  # type: ignore[union-attr]
    # The overview's speed-up is the summary's one figure: over the fastest recipe within budget.
    assert o.speedup is not None and o.speedup == study.summary.speedup
    assert o.speedup.ratio == min(study.summary.speedups.values())
    assert study.summary.baselines[o.speedup.recipe].number == o.speedup.recipe_number
    assert o.counted_memory == "VRAM (device)"


def test_trial_from_an_older_version_keeps_its_configuration(two_studies: str) -> None:
    study = open_reader(two_studies).load_study("flux-dev-16gib")
    old = study.row(42)
    assert old is not None and old.measurement is None and old.config is not None
    assert old.memory_bytes is None and old.latency_s is not None


def test_stamp_changes_when_a_trial_is_added(two_studies: str) -> None:
    reader = open_reader(two_studies)
    before = reader.stamps()["flux-dev-16gib"]
    from fake_study import add_fake_trials

    add_fake_trials(two_studies, "flux-dev-16gib", 1)
    after = reader.stamps()["flux-dev-16gib"]
    assert after.n_trials == before.n_trials + 1 and after != before


def test_missing_storage_is_a_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no storage at"):
        open_reader(f"sqlite:///{tmp_path}/absent.db").list_studies()
    assert not (tmp_path / "absent.db").exists()  # read-only: nothing created


def test_not_an_optuna_storage(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE x (a)").connection.commit()
    with pytest.raises(DataError, match="not an Optuna storage"):
        open_reader(f"sqlite:///{path}").list_studies()


def test_locked_storage(two_studies: str) -> None:
    holder = sqlite3.connect("qco.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DataError, match="locked"):
            open_reader(two_studies, lock_timeout=0.2).load_study("flux-dev-16gib")
    finally:
        holder.execute("ROLLBACK")
    assert open_reader(two_studies).load_study("flux-dev-16gib").summary.rows


def test_storage_deleted_while_open(two_studies: str) -> None:
    reader = open_reader(two_studies)
    assert reader.list_studies()
    Path("qco.db").unlink()
    with pytest.raises(DataError, match="no storage at"):
        reader.load_study("flux-dev-16gib")


def test_unknown_study_and_bad_url(two_studies: str) -> None:
    with pytest.raises(DataError, match="no study named 'nope'"):
        open_reader(two_studies).load_study("nope")
    with pytest.raises(DataError, match="no study named 'nope'"):
        open_reader(two_studies, optuna_api=True).load_study("nope")
    with pytest.raises(DataError, match="not a storage URL"):
        open_reader("qco.db")


def test_masked_credentials_in_messages() -> None:
    reader = open_reader("postgresql+psycopg://user:secret@127.0.0.1:1/db", lock_timeout=0.1)
    with pytest.raises(DataError) as info:
        reader.list_studies()
    assert "secret" not in str(info.value)


def test_study_attribute_names_match_the_study_loop() -> None:
    study = pytest.importorskip("qco_tune.loop.setup")
    assert (data.SPEC_ATTR, data.MODEL_ATTR, data.GPU_ATTR, data.CAPABILITIES_ATTR) == (
        study.SPEC_ATTR,
        study.MODEL_ATTR,
        study.GPU_ATTR,
        study.CAPABILITIES_ATTR,
    )


def test_front_sweep_matches_pairwise_domination() -> None:
    for seed in range(200):
        rng = random.Random(seed)
        rows = [
            TrialRow(i, "front", None, None, float(rng.randint(1, 6)), rng.choice([None, 0, 1, 2, 3]), None, None, None)
            for i in range(rng.randint(0, 20))
        ]
        brute = {r.number for r in rows if not any(_dominates(o, r) for o in rows if o is not r)}
        assert _front_numbers(rows) == brute, seed


def test_empty_storage_lists_nothing(in_tmp: Path) -> None:
    fill_fake_study("sqlite:///e.db", "empty", 0, baselines=False)
    overview = open_reader("sqlite:///e.db").list_studies()[0]
    assert overview.counts.total == 0 and overview.best_latency_s is None


def test_headless_parts_import_no_textual() -> None:
    import subprocess
    import sys

    from tui_helpers import subprocess_env

    code = (
        "import sys; import qco_tune.search.compare, qco_tune.store.tables, qco_tune.store.studydata,"
        " qco_tune.tui.filters, qco_tune.tui.runs,"
        " qco_tune.tui.exporting, qco_tune.cli.main;"
        "bad = [m for m in ('textual', 'torch') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env(), timeout=60)
