"""Opening storages: defaults, masking credentials, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from qco_tune.store.storage import DEFAULT_STORAGE, StorageError, mask_url, open_storage, storage_url


def test_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QCO_STORAGE", raising=False)
    assert storage_url(None) == DEFAULT_STORAGE
    monkeypatch.setenv("QCO_STORAGE", "sqlite:///env.db")
    assert storage_url(None) == "sqlite:///env.db"
    assert storage_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_mask_url_hides_password() -> None:
    assert mask_url("postgresql+psycopg://alice:s3cr%40t@db:5432/qco") == "postgresql+psycopg://alice:***@db:5432/qco"
    assert mask_url("sqlite:///studies/qco.db") == "sqlite:///studies/qco.db"


def test_sqlite_file_and_folder_are_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/deeper/qco.db"
    storage = open_storage(url)
    assert (tmp_path / "deeper" / "qco.db").exists()
    assert storage.get_all_studies() == []


def test_unwritable_sqlite_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot create the folder"):
        open_storage(f"sqlite:///{blocker}/sub/qco.db")


def test_malformed_and_unreachable_urls() -> None:
    with pytest.raises(StorageError, match="not a storage URL"):
        open_storage("studies.db")
    with pytest.raises(StorageError) as info:
        open_storage("postgresql+psycopg://bob:hunter2@127.0.0.1:1/qco")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    assert "\n" not in str(info.value)
