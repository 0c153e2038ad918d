"""Transfer between devices, on every ordered pair of recorded spaces of one kernel family.

For each target file and each other file of its family (the source: another
device's recording), the default strategy replays the target seeded by the
source's best configs (tunesvc.search.transfer.seed_configs, as ``tunesvc replay
--transfer`` does; a source with more or fewer parameters is projected onto the
target's), and the same runs without seeds. ``--mode`` names the ensemble's
transfer modes to compare (tunesvc.search.ranges.TRANSFER: "near", the
default, "probe", "soft", "arm", "first"); mode "null" runs no seeds with other
run seeds, so its column shows how far two unseeded medians differ by chance,
the floor against which a seeded pair's cost is read. Cells: median evaluations
to within 5% of the optimum, seeded vs unseeded, and the score; the cost of a
bad seed shows as seeded > unseeded.

    .venv/bin/python benchmarks/cv_transfer.py --repeats 10 --mode near,probe,arm,null
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see cv_search.py
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cv_search import distinct, family, repeats_for, runner  # noqa: E402
from tunesvc.replay.files import load  # noqa: E402
from tunesvc.replay.runner import to_records  # noqa: E402
from tunesvc.replay.score import ReplayRun, default_budget, run_once, summarize  # noqa: E402
from tunesvc.search.transfer import seed_configs  # noqa: E402

_seeds: dict[tuple[str, str], list] = {}


def seeds(target: str, source: str) -> list:
    if (target, source) not in _seeds:
        r = runner(target)
        _seeds[(target, source)] = seed_configs(to_records(load(source)), r.info.fingerprint, r.recorded.problem_size, r.space)
    return _seeds[(target, source)]


def task(args) -> tuple:
    target, source, mode, budget, seed = args
    if mode == "null":  # no seeds, other run seeds: how far two unseeded medians differ by chance alone
        return args, list(run_once(runner(target), "ensemble", budget, seed + 1000 * (1 + _order(source))).times)
    options = {"transfer": mode} if source else {}
    s = seeds(target, source) if source else ()
    return args, list(run_once(runner(target), "ensemble", budget, seed, s, options=options).times)


def _order(source: str) -> int:
    return sorted(p.name for p in Path(source).parent.glob("*.json*")).index(Path(source).name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", nargs="*", default=sorted(str(p) for p in (ROOT.parent / "shared" / "replay").glob("*.json*")))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--mode", default="near", help="comma-separated transfer modes of the ensemble (probe, soft, arm, "
                    "first; 'both' is arm,first), and 'null': no seeds, other run seeds, the noise floor of a pair")
    args = ap.parse_args()
    files = distinct(args.files)
    modes = ["arm", "first"] if args.mode == "both" else args.mode.split(",")
    tasks = []
    for t in files:
        budget = default_budget(runner(t).recorded.times)
        seeds_ = range(args.seed, args.seed + repeats_for(budget, args.repeats))
        tasks += [(t, "", "", budget, s) for s in seeds_]
        tasks += [(t, src, m, budget, s) for src in files if src != t and family(src) == family(t) for m in modes for s in seeds_]
    with multiprocessing.Pool(args.jobs) as pool:
        done = pool.map(task, tasks, chunksize=1)
    report(done, files, modes)


def report(done, files, modes) -> None:
    runs: dict[tuple, list] = {}
    for (t, src, mode, budget, _s), times in done:
        runs.setdefault((t, src, mode), []).append(ReplayRun(tuple(times), len(times), 0.0))
    name = {f: Path(f).name.split(".")[0] for f in files}
    print(f"{'target':32s} {'source':32s} {'seeds':>5s} " + " ".join(f"{m + ' evals':>12s} {m + ' score':>12s}" for m in ["none", *modes]))
    deltas = {m: [] for m in modes}
    for t in files:
        times = runner(t).recorded.times
        budget = default_budget(times)
        base = summarize(t, "ensemble", budget, times, runs[(t, "", "")])
        for src in files:
            if (t, src, modes[0]) not in runs:
                continue
            reps = [summarize(t, "ensemble", budget, times, runs[(t, src, m)]) for m in modes]
            cells = [f"{base.median_evals_to_5pct:12.0f} {base.score:12.3f}"]
            for m, r in zip(modes, reps):
                cells.append(f"{r.median_evals_to_5pct:12.0f} {r.score:12.3f}")
                deltas[m].append((r.median_evals_to_5pct - base.median_evals_to_5pct, r.score - base.score))
            print(f"{name[t]:32s} {name[src]:32s} {len(seeds(t, src)):5d} " + " ".join(cells))
    for m in modes:
        d_evals, d_score = zip(*deltas[m])
        print(f"\n{m}: over {len(d_evals)} pairs, median change in evaluations to 5% {statistics.median(d_evals):+.1f}, "
              f"mean {statistics.mean(d_evals):+.1f}, worst {max(d_evals):+.0f}, pairs worse by more than 5: "
              f"{sum(d > 5 for d in d_evals)}; mean change in score {statistics.mean(d_score):+.3f}, worst {min(d_score):+.3f}")


if __name__ == "__main__":
    main()
