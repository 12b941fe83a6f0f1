"""What one run of the study loop shares: its constants, its observer, its context and its result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qco_tune.core.config import TrialConfig
from qco_tune.core.records import Capabilities, Measurement, ModelInfo
from qco_tune.core.studyspec import StudySpec
from qco_tune.measure.runner import run_trial
from qco_tune.search import memory
from qco_tune.search.pareto import ParetoSummary
from qco_tune.search.space import SearchSpace

if TYPE_CHECKING:
    import optuna


GIB = 2**30


METRIC_NAMES = ["latency_s", "peak_memory_gib"]


MAX_CONSECUTIVE_SKIPS = 25
"""After this many proposals in a row that cannot run, the next one is drawn from the untried rest."""


MAX_ATTEMPTS = 3
"""Runs of one configuration that may end interrupted before it is given up: a configuration whose
cold start outlasts every run it is given (a time-limited session, say) must not come back forever."""


FAULTS_ENV = "QCO_TEST_FAULTS"
"""Test-only hook: ``"2:abort,3:hang"`` makes trial 2's child abort and trial 3's hang."""


REFERENCE = "reference"


OFFLOAD_REFERENCE = "reference (model offload)"
"""The reference measured again with model CPU offload, where it does not fit the GPU otherwise."""


REFERENCE_BASELINES = (REFERENCE, OFFLOAD_REFERENCE)


PSNR_CAP = 1000.0
"""dB counted for an output identical to the reference (PSNR is infinite) in the ``psnr`` constraint."""


class StudyError(RuntimeError):
    """A study cannot start or continue; the message is one line for the user."""


class Observer(Protocol):
    """Receives progress events of a running study (the CLI's live display, tests)."""

    def study_started(self, spec: StudySpec, done: int, target: int | None, resumed: bool) -> None: ...
    def trial_started(self, number: int, config: TrialConfig, baseline: str | None, index: int) -> None: ...
    def phase(self, text: str) -> None: ...
    def trial_finished(self, number: int, measurement: Measurement, feasible: bool, best: float | None) -> None: ...
    def trial_skipped(self, number: int, config: TrialConfig, reason: str) -> None: ...
    def message(self, text: str) -> None: ...


class SilentObserver:
    """An observer that ignores every event."""

    def study_started(self, spec: StudySpec, done: int, target: int | None, resumed: bool) -> None:
        pass

    def trial_started(self, number: int, config: TrialConfig, baseline: str | None, index: int) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def trial_finished(self, number: int, measurement: Measurement, feasible: bool, best: float | None) -> None:
        pass

    def trial_skipped(self, number: int, config: TrialConfig, reason: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class RunResult:
    """What one ``run_study`` call did."""

    study_name: str
    ran: int = 0
    skipped: int = 0
    stopped: str = ""
    """Why the loop ended: ``trials``, ``timeout``, ``exhausted`` or ``interrupted``."""
    recovered: list[int] = field(default_factory=list)
    remeasured: list[tuple[int, int]] = field(default_factory=list)
    """(extrapolated trial, its re-measurement at the full step count) pairs of this run."""
    summary: ParetoSummary | None = None


@dataclass
class StudyContext:
    """What the loop's steps share while one process runs trials of one study: its spec, model, machine,
    space, Optuna study and observer, and what this run has learnt or put aside."""

    spec: StudySpec
    model: ModelInfo
    caps: Capabilities
    space: SearchSpace
    study: optuna.Study
    observer: Observer
    faults: dict[int, str]
    local_space: SearchSpace | None = None
    """What this machine can run, when the study's space was built on another (a worker's GPU)."""
    calibration: memory.Calibration = field(default_factory=memory.Calibration)
    """The memory model's corrections, fitted on the study's finished trials (``recalibrate``)."""
    execute: Callable[..., Measurement] = run_trial
    """Runs one trial request: the real runner, or a replay of recorded measurements (``qco-tune bench``)."""
    plan: bool = True
    """Stage the search (``qco_tune.search.planner``): the memory levels uncompiled, then compile what can reach the
    front, then refine it along the other knobs. False: the sampler alone proposes (kept for the benchmark's
    comparison)."""
    compile_artifacts: Path | None = None
    """The folder of the storage's portable compile artefacts (``compile_artifacts.artifacts_root``); None:
    trials neither load nor save them (the benchmark's replays)."""
    deferred: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    """Retries of cut-off trials put aside in this run (not enough time left for them): (parameters, user
    attributes), queued again when the run ends (``requeue_deferred``)."""
    restore_reference: bool = False
    """Before the first trial, measure the reference again when its output is not on this machine
    (``restore_reference``): ``run`` and workers do; replays and in-process tests do not."""


def parse_faults(text: str | None) -> dict[int, str]:
    """``"2:abort,3:hang"`` → ``{2: "abort", 3: "hang"}`` (test-only fault injection)."""
    faults: dict[int, str] = {}
    for item in (text or "").split(","):
        if item.strip():
            number, _, kind = item.partition(":")
            faults[int(number)] = kind.strip()
    return faults
