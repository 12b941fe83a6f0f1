"""Opening storages: defaults, masking credentials, clear errors, concurrent creation, stale trials."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from qco_tune.core.config import TrialConfig
from qco_tune.core.keys import CONFIG_ATTR, OWNER_HOST_ATTR, OWNER_PID_ATTR, OWNER_PID_NAMESPACE_ATTR
from qco_tune.core.paths import trial_dir_prefix
from qco_tune.core.spec import apply_overrides, load_default_spec
from qco_tune.core.studyspec import StudySpec
from qco_tune.loop.context import SilentObserver
from qco_tune.loop.study import run_study
from qco_tune.store.storage import (
    DEFAULT_STORAGE,
    StorageError,
    mask_text,
    mask_url,
    open_storage,
    owner_attrs,
    recover_stale_trials,
    storage_url,
)

REPO = Path(__file__).resolve().parents[2]


def test_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QCO_STORAGE", raising=False)
    assert storage_url(None) == DEFAULT_STORAGE
    monkeypatch.setenv("QCO_STORAGE", "sqlite:///env.db")
    assert storage_url(None) == "sqlite:///env.db"
    assert storage_url("sqlite:///flag.db") == "sqlite:///flag.db"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://alice:s3cr%40t@db:5432/qco", "postgresql+psycopg://alice:***@db:5432/qco"),
        ("postgresql://bob:p@ss@db/qco", "postgresql://bob:***@db/qco"),  # an unescaped @ in the password
        (
            "postgresql+psycopg://bob@db/qco?password=hunter2&sslmode=require",
            "postgresql+psycopg://bob@db/qco?password=***&sslmode=require",
        ),
        (
            "postgresql+psycopg://db/qco?sslmode=require&sslpassword=k3y",
            "postgresql+psycopg://db/qco?sslmode=require&sslpassword=***",
        ),
        ("host=db user=bob password='two words' dbname=qco", "host=db user=bob password=*** dbname=qco"),
        ("host=db password=hunter2 dbname=qco", "host=db password=*** dbname=qco"),
        ("sqlite:///studies/qco.db", "sqlite:///studies/qco.db"),
    ],
)
def test_mask_url_hides_the_password_in_every_form(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_a_driver_message_repeating_the_password_is_masked() -> None:
    url = "postgresql+psycopg://bob:s3cr%40t@db/qco"
    assert mask_text("auth failed for s3cr@t (s3cr%40t)", url) == "auth failed for *** (***)"


def test_sqlite_file_is_created_in_an_existing_folder(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/qco.db")
    assert (tmp_path / "qco.db").exists()
    assert storage.get_all_studies() == []


def test_a_missing_folder_is_refused_and_named(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=f"the folder {tmp_path}/typo/dir does not exist") as info:
        open_storage(f"sqlite:///{tmp_path}/typo/dir/x.db")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "typo").exists()  # nothing created


def test_the_default_storage_creates_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QCO_STORAGE", raising=False)
    open_storage(None)
    assert (tmp_path / DEFAULT_STORAGE.split(":///", 1)[1]).is_file()


def test_a_file_in_place_of_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="is not a folder"):
        open_storage(f"sqlite:///{blocker}/qco.db")


NO_OVERRIDE = [
    "setpriv",
    "--bounding-set",
    "-dac_override,-dac_read_search",
    "--inh-caps",
    "-dac_override,-dac_read_search",
]
"""Root writes anywhere: as root, the check runs without the capabilities that let it (permissions then apply)."""


def test_a_folder_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    open_storage(f"sqlite:///{folder}/qco.db")  # a storage that exists, in a folder later made read-only
    folder.chmod(0o555)
    code = (
        "import sys; from qco_tune.store.storage import open_storage, StorageError\n"
        "try:\n    open_storage(sys.argv[1])\nexcept StorageError as e:\n    print(e); sys.exit(3)\n"
    )
    try:
        result = subprocess.run(
            [*(NO_OVERRIDE if os.geteuid() == 0 else []), sys.executable, "-c", code, f"sqlite:///{folder}/qco.db"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        folder.chmod(0o755)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.strip() == (
        f"the storage file {folder}/qco.db cannot be written: its folder {folder} is not writable"
    )


def test_malformed_and_unreachable_urls() -> None:
    with pytest.raises(StorageError, match="not a storage URL") as info:
        open_storage("host=db password=hunter2")
    assert "hunter2" not in str(info.value)
    with pytest.raises(StorageError) as info:
        open_storage("postgresql+psycopg://bob:hunter2@127.0.0.1:1/qco")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(StorageError) as info:
        open_storage("postgresql+psycopg://bob@127.0.0.1:1/qco?password=hunter2")
    assert "hunter2" not in str(info.value)


def _create(url: str, start: multiprocessing.synchronize.Event, name: str) -> None:  # type: ignore[name-defined]
    start.wait(60)
    storage = open_storage(url)
    optuna.create_study(study_name=name, storage=storage, directions=["minimize", "minimize"])


def test_processes_creating_one_new_sqlite_storage_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_create, args=(url, start, f"s{i}")) for i in range(6)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0] * 6
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(url)) == [f"s{i}" for i in range(6)]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running_trial(study: optuna.Study, attrs: dict[str, object]) -> int:
    trial = study.ask()
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return trial.number


def test_a_dead_owner_is_recovered_at_once_only_in_its_own_pid_namespace(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/q.db"), directions=["minimize"])
    pid = _dead_pid()
    here = {**owner_attrs(), OWNER_PID_ATTR: pid}
    assert OWNER_PID_NAMESPACE_ATTR in here  # Linux: the boot and PID namespace are known
    left_behind = Path(tempfile.mkdtemp(prefix=trial_dir_prefix(pid)))
    (left_behind / "request.json").write_text("{}")
    dead_here = _running_trial(study, here)
    # Another container of the same host name: its process ids are not ours, whatever this host runs.
    elsewhere = _running_trial(study, {**here, OWNER_PID_NAMESPACE_ATTR: "other-boot/pid:[1]"})
    unknown = _running_trial(study, {OWNER_HOST_ATTR: here[OWNER_HOST_ATTR], OWNER_PID_ATTR: pid})  # older record

    assert recover_stale_trials(study) == [dead_here]
    states = {t.number: t.state for t in study.trials}
    assert states == {dead_here: TrialState.FAIL, elsewhere: TrialState.RUNNING, unknown: TrialState.RUNNING}
    assert not left_behind.exists()  # the killed trial's temporary folder is removed with its recovery


class _Header(SilentObserver):
    def study_started(self, spec: StudySpec, done: int, target: int | None, resumed: bool) -> None:
        self.done = done


def test_a_resumed_run_does_not_count_the_trial_a_killed_run_abandoned(tmp_path: Path) -> None:
    from fake_machines import H100_NATIVE_ATTENTION

    url = f"sqlite:///{tmp_path}/q.db"
    spec = apply_overrides(load_default_spec(), trials=8, name="killed")
    run_study(spec, storage_url=url, caps=H100_NATIVE_ATTENTION, prepare_only=True)
    study = optuna.load_study(study_name="killed", storage=url)
    dist = {"compile": CategoricalDistribution(["none", "regional", "full"])}
    done = {CONFIG_ATTR: TrialConfig(compile="regional").to_dict()}
    study.add_trial(
        optuna.trial.create_trial(
            values=[1.0, 1.0], params={"compile": "regional"}, distributions=dist, user_attrs=done
        )
    )
    # The trial of a run killed with -9: RUNNING, its owner gone.
    abandoned = {CONFIG_ATTR: TrialConfig(compile="full").to_dict(), **owner_attrs(), OWNER_PID_ATTR: _dead_pid()}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.RUNNING, params={"compile": "full"}, distributions=dist, user_attrs=abandoned
        )
    )
    header = _Header()
    result = run_study(spec, storage_url=url, caps=H100_NATIVE_ATTENTION, prepare_only=True, observer=header)
    assert header.done == 1 and len(result.recovered) == 1
    assert TrialState.RUNNING not in [t.state for t in study.get_trials()]
