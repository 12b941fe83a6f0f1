"""Not a test: writes the README's screenshot of the study screen, ``studies/results/tui-study-screen.svg``.

    python tests/tui/make_screenshot.py

Uses a fake study (fake_study.py) in a temporary SQLite storage, so it runs anywhere.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE)]

import optuna  # noqa: E402
from fake_study import FAKE_GPU, fill_fake_study  # noqa: E402

from qco_tune.tui.app import QcoTuneApp  # noqa: E402
from qco_tune.tui.screens.study import StudyScreen  # noqa: E402

OUT = REPO / "studies" / "results" / "tui-study-screen.svg"


async def shoot(url: str) -> None:
    app = QcoTuneApp(url, study="flux-dev-16gib", poll_interval=3600)
    async with app.run_test(size=(150, 40)) as pilot:
        while not (isinstance(app.screen, StudyScreen) and app.screen.loaded_in is not None):
            await pilot.pause(0.05)
        await pilot.pause(1.0)  # the footer is drawn last: under load 0.3 s missed it
        app.save_screenshot(filename=OUT.name, path=str(OUT.parent))


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        fill_fake_study("sqlite:///qco.db", "flux-dev-16gib", 120, seed=3, gpu=FAKE_GPU, extra_kinds=("failed",))
        asyncio.run(shoot("sqlite:///qco.db"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
