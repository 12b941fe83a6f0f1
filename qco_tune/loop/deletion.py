"""``qco-tune delete``: a study out of its storage, with the files this host keeps for it alone."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from qco_tune.core.compile_artifacts import artifacts_root, study_artifacts_dir
from qco_tune.core.paths import study_compile_cache_dir


@dataclass
class Deletion:
    """What ``delete_study`` removed, and the study's folders it left (shared by every storage of the host)."""

    study: str
    trials: int
    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def study_folders(name: str, url: str, compile_artifacts: Path | None) -> tuple[list[Path], list[Path]]:
    """The study's folders on this host that exist: (removable, kept). The compile artefacts beside a SQLite
    storage (or in ``compile_artifacts``) belong to that storage's study; in qco-tune's cache they are keyed by
    study name only, so another storage's study of the same name may use them: kept. The Inductor/Triton cache
    is a cache (a study of the same name compiles cold once more): removed."""
    own_root = compile_artifacts is not None or url.startswith("sqlite")
    artefacts = study_artifacts_dir(artifacts_root(url, compile_artifacts), name)
    removable = [study_compile_cache_dir(name)] + ([artefacts] if own_root else [])
    kept = [] if own_root else [artefacts]
    return [p for p in removable if p.exists()], [p for p in kept if p.exists()]


def delete_study(name: str, url: str | None, compile_artifacts: Path | None = None) -> Deletion:
    """Delete study ``name`` (``StudyError`` when it is not in the storage) and its removable folders."""
    import optuna

    from qco_tune.loop.summary import load_stored_study
    from qco_tune.store.storage import storage_url

    resolved = storage_url(url)
    study = load_stored_study(name, resolved)
    trials = len(study.get_trials(deepcopy=False))
    optuna.delete_study(study_name=name, storage=study._storage)
    removable, kept = study_folders(name, resolved, compile_artifacts)
    for folder in removable:
        shutil.rmtree(folder, ignore_errors=True)
    return Deletion(name, trials, removed=removable, kept=kept)
