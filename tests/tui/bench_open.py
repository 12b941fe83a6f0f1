"""Benchmark (not a test): how fast ``qco-tune tui`` opens a study of 10,000 trials.

    python tests/tui/bench_open.py [--db PATH] [--trials 10000] [--repeat 5] [--out studies/results]

Fills a SQLite storage with the FAKE BACKEND (fake_study.py, through Optuna's own API: minutes,
once; ``--db`` reuses it), then measures, each the median of ``--repeat`` runs:

* reading the study headless: the direct SQL reader (partial and full) and Optuna's API
  (``get_trials``, what ``--optuna-api`` uses);
* opening it in the real app (Pilot, 160×48), from pressing Enter on the studies screen to the plot
  and table on screen ("first view": latency, memory, category of every trial) and to everything on
  screen (configurations and measurements too).

Writes ``tui-open-10k.json`` and ``tui-open-10k.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE)]

import optuna  # noqa: E402
import textual  # noqa: E402

from qco_tune.store.tables import open_reader  # noqa: E402

STUDY = "flux-dev-16gib-10k"


def fill(db: Path, trials: int) -> float | None:
    from fake_study import fill_fake_study

    url = f"sqlite:///{db}"
    if db.exists():
        try:
            if optuna.load_study(study_name=STUDY, storage=url).trials:
                return None
        except KeyError:
            pass
    start = time.perf_counter()
    fill_fake_study(url, STUDY, trials - 2, extra_kinds=("running", "old"))
    return time.perf_counter() - start


def timed(fn: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


FRAMES: dict[str, float] = {}
"""When the plot and the table first drew the study's trials (partial, then complete)."""


def _hook_rendering() -> None:
    """Record the moment the widgets draw data: that, not the arrival of data, is what a user sees."""
    from qco_tune.tui.widgets.scatter import ScatterPlot
    from qco_tune.tui.widgets.trials_table import TrialsTable

    plot_render, line_render = ScatterPlot.render, TrialsTable.render_line

    def render(self: ScatterPlot) -> Any:
        result = plot_render(self)
        if self._points:
            FRAMES.setdefault("plot", time.perf_counter())
        return result

    def render_line(self: TrialsTable, y: int) -> Any:
        strip = line_render(self, y)
        if self.shown and y > 0:
            FRAMES.setdefault("table_partial" if self.partial else "table_complete", time.perf_counter())
        return strip

    ScatterPlot.render = render  # type: ignore[method-assign]
    TrialsTable.render_line = render_line  # type: ignore[method-assign]


async def open_in_app(url: str) -> tuple[float, float, int]:
    """(seconds to plot and table drawn, seconds to the complete table drawn, trials) after Enter."""
    from qco_tune.tui.app import QcoTuneApp
    from qco_tune.tui.screens.study import StudyScreen

    app = QcoTuneApp(url, poll_interval=3600)
    async with app.run_test(size=(160, 48)) as pilot:
        while not app.study_names:
            await pilot.pause(0.01)
        await pilot.pause(0.3)
        FRAMES.clear()
        start = time.perf_counter()
        await pilot.press("enter")
        while "table_complete" not in FRAMES:
            await pilot.pause(0.005)
        screen = app.screen
        assert isinstance(screen, StudyScreen) and screen.data is not None
        first = max(FRAMES["plot"], FRAMES.get("table_partial", FRAMES["table_complete"])) - start
        return first, FRAMES["table_complete"] - start, len(screen.data.summary.rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("bench-open-10k.db"))
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "studies" / "results")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fill_s = fill(args.db, args.trials)
    url = f"sqlite:///{args.db.resolve()}"
    load_before = os.getloadavg()
    sql_partial = timed(lambda: open_reader(url).load_study(STUDY, partial=True), args.repeat)
    sql_full = timed(lambda: open_reader(url).load_study(STUDY), args.repeat)
    via_optuna = timed(lambda: open_reader(url, optuna_api=True).load_study(STUDY), max(1, args.repeat // 2))
    _hook_rendering()
    app_runs = [asyncio.run(open_in_app(url)) for _ in range(args.repeat)]
    n_trials = int(app_runs[0][2])
    result = {
        "trials": n_trials,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {"textual": textual.__version__, "optuna": optuna.__version__},
        "fill_s": round(fill_s, 1) if fill_s is not None else None,
        "median_s": {
            "read_sql_partial": round(statistics.median(sql_partial), 3),
            "read_sql_full": round(statistics.median(sql_full), 3),
            "read_optuna_api": round(statistics.median(via_optuna), 3),
            "app_first_view": round(statistics.median(r[0] for r in app_runs), 3),
            "app_complete": round(statistics.median(r[1] for r in app_runs), 3),
        },
        "runs_s": {
            "read_sql_partial": [round(x, 3) for x in sql_partial],
            "read_sql_full": [round(x, 3) for x in sql_full],
            "read_optuna_api": [round(x, 3) for x in via_optuna],
            "app_first_view": [round(r[0], 3) for r in app_runs],
            "app_complete": [round(r[1], 3) for r in app_runs],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tui-open-10k.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "tui-open-10k.md").write_text(report(result))
    print(json.dumps(result["median_s"], indent=2))


def report(r: dict[str, Any]) -> str:
    m, med = r["machine"], r["median_s"]
    return f"""# Opening a {r["trials"]:,}-trial study in `qco-tune tui`

Recorded by `python tests/tui/bench_open.py` (a benchmark, not a test). The study is filled by the
fake backend of the TUI tests (`tests/tui/fake_study.py`) through Optuna's own API into SQLite:
about 68 % complete and feasible or over budget, 6 % failed, 10 % skipped, one running, one written
by an older version, the four seeded recipes.

Machine: {m["cpus"]} CPUs, {m["platform"]}, Python {m["python"]}; Textual {r["versions"]["textual"]},
Optuna {r["versions"]["optuna"]}. Load average {m["load_average_before"]} before and
{m["load_average_after"]} after (other work shared the machine). Medians of the runs in the JSON.

| step | median |
|---|---|
| read it, direct SQL, partial (latency, memory, category, recipe of every trial) | {med["read_sql_partial"]:.3f} s |
| read it, direct SQL, full (configurations and measurements too) | {med["read_sql_full"]:.3f} s |
| read it through Optuna's API (`get_trials`, the `--optuna-api` path) | {med["read_optuna_api"]:.3f} s |
| **app: Enter on the studies screen → plot, front and table on screen** | **{med["app_first_view"]:.3f} s** |
| app: Enter → everything on screen (configurations, measurements) | {med["app_complete"]:.3f} s |

How: the TUI reads Optuna's tables with SQLAlchemy (read-only, `mode=ro` for SQLite), parses all
attribute JSON in one call, finds the Pareto front with an O(n log n) sweep, shows the plot and the
numbers first and the configurations a moment later, and draws only the table rows on screen.
`get_trials` through Optuna's storage is the slow part it avoids.
"""


if __name__ == "__main__":
    main()
