"""A FAKE BACKEND for ``qco-tune run SPEC --storage URL``: the TUI's start/stop tests run this instead.

It behaves as the real command does towards the storage and signals: creates the study named by
the spec, records a RUNNING trial, finishes a fake trial every half second, and on SIGINT or SIGTERM
(taken as the real command takes them, whatever it inherited) records the running trial as
interrupted (FAIL, ``qco.status = interrupted``) and exits 130. No pipeline runs.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import optuna
from fake_study import create_fake_study, fake_trial, fast_storage
from optuna.trial import TrialState

from qco_tune.core.config import TrialConfig
from qco_tune.loop.signals import stop_signals_as_interrupt
from qco_tune.store.constraints import record_constraints
from qco_tune.tui.runs import study_name_of

GIB = 2**30


@stop_signals_as_interrupt()
def main() -> int:
    spec, url = Path(sys.argv[1]), sys.argv[sys.argv.index("--storage") + 1]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name_of(spec)
    try:
        study = optuna.load_study(study_name=name, storage=fast_storage(url))
    except KeyError:
        study = create_fake_study(url, name)
    print(f"fake run of study {name!r}", flush=True)
    rng = random.Random(0)
    trial = None
    try:
        for _ in range(200):
            trial = study.ask()
            trial.set_user_attr("qco.config", TrialConfig(compile="regional").to_dict())
            print(f"trial {trial.number} running", flush=True)
            time.sleep(0.5)
            done = fake_trial(trial.number, rng, 16 * GIB, kind="ok")
            for key, value in done.user_attrs.items():
                trial.set_user_attr(key, value)
            record_constraints(trial, {"vram": done.constraints["vram"]})
            study.tell(trial, values=done.values)
            trial = None
    except KeyboardInterrupt:
        if trial is not None:
            trial.set_user_attr("qco.reason", "interrupted (Ctrl-C or SIGTERM)")
            trial.set_user_attr("qco.status", "interrupted")
            study.tell(trial, state=TrialState.FAIL)
        print("interrupted", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
