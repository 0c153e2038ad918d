"""What the study layer costs per trial: a strategy driven bare (replay) and through an Optuna study.

Every live tune proposes through its problem's Optuna study (tunesvc.search.live.StudySearch): a
claim, a RUNNING trial with the real values, and at the end the value in seconds and the attrs.
This replays recorded spaces of ../shared/replay through the same drive loop three ways, with the
same strategy and seed, and prints milliseconds per trial:

* ``bare``: the strategy alone (replay's path, which the study layer leaves as it was);
* ``memory``: through a study in memory (no storage: the layer's Python cost);
* ``sqlite``: through a study in an SQLite file, as a default ``tunesvc tune`` keeps it;
* ``postgres``: through a study on a PostgreSQL server, with ``--postgres URL``.

It also checks that each way measured the same configs in the same order (the study changes no
choice), so the search scores of benchmarks/search.py hold for live tuning.

    .venv/bin/python benchmarks/study_overhead.py                       # 3 files, ensemble and tpe, 100 trials
    .venv/bin/python benchmarks/study_overhead.py --trials 200 --strategies ensemble,random,tpe
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from tunesvc import search  # noqa: E402
from tunesvc.measure.drive import drive  # noqa: E402
from tunesvc.replay.runner import RecordedRunner  # noqa: E402
from tunesvc.search.live import StudySearch  # noqa: E402

FILES = ("pnpoly_RTX_3090", "convolution_A100", "gemm_RTX_3090")


def run(runner: RecordedRunner, strategy: str, trials: int, storage: str | None, way: str) -> tuple[float, list]:
    """(seconds per trial, configs in order) of one run: ``way`` is bare, or a study's storage kind."""
    runner.reset()
    strat = search.make(strategy, runner.space, 1)
    name = f"overhead {runner.recorded.name} {strategy} {way} {time.time():.3f}"  # a fresh study each run
    live = StudySearch(strat, storage, name) if way != "bare" else None
    order: list = []

    def measured(m):
        if live is not None:
            live.record(m, record_id=len(order))
        order.append(m.config)

    t0 = time.perf_counter()
    drive(live or strat, runner, lambda: "done" if len(order) >= trials else None, measured)
    if live is not None:
        live.close()
    return (time.perf_counter() - t0) / max(1, len(order)), order


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default=",".join(FILES), help="recorded files of ../shared/replay, without .json.gz")
    ap.add_argument("--strategies", default="ensemble,tpe")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--postgres", default=None, help="also a study on this server (postgresql+psycopg://...)")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    replay = ROOT.parent / "shared" / "replay"
    print(f"{'file':24} {'configs':>7} {'strategy':10} {'bare ms':>8} {'memory ms':>9} {'sqlite ms':>9}"
          + (f" {'postgres ms':>11}" if args.postgres else "") + "  same order")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.files.split(","):
            runner = RecordedRunner(replay / f"{name}.json.gz")
            for strategy in args.strategies.split(","):
                ways = {"bare": None, "memory": None, "sqlite": f"sqlite:///{tmp}/{name}-{strategy}.optuna.db?timeout=60"}
                if args.postgres:
                    ways["postgres"] = args.postgres
                got = {way: run(runner, strategy, args.trials, url, way) for way, url in ways.items()}
                same = all(order == got["bare"][1] for _, order in got.values())
                print(f"{name:24} {len(runner.space):7d} {strategy:10} "
                      + " ".join(f"{got[w][0] * 1e3:{9 if w != 'bare' else 8}.2f}" for w in ("bare", "memory", "sqlite"))
                      + (f" {got['postgres'][0] * 1e3:11.2f}" if args.postgres else "") + f"  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
