"""Our search strategies against Kernel Tuner's own, on the recorded spaces in ../shared/replay.

Both replay the same files with the same budget of feasible evaluations and are
scored by the same code (tunesvc.replay.score.summarize): Willemsen et al.'s score
and evaluations until within 5% of the optimum. Kernel Tuner replays through
its own simulation mode (``kernel_tuner.tune_cache``), which builds its search
space from the configs that ran without error: its strategies never see a
failed config, while ours must discover failures by evaluating them (as in
live tuning; a failed evaluation does not count against the budget, for either).
``--same-info S`` also runs our strategies S on the files with their failed
configs removed, the information Kernel Tuner's replay gets (rows marked
"no failures"). Kernel Tuner cannot read T4 files, so it has no row there.

Kernel Tuner is no dependency of tunesvc; install it beside the project only
for this benchmark, e.g.::

    python -m venv /tmp/ktvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/ktvenv/lib/python3.11/site-packages/zz_tunesvc.pth
    /tmp/ktvenv/bin/pip install kernel_tuner==1.5.0
    /tmp/ktvenv/bin/python benchmarks/search.py --repeats 10 --jobs 2

Without Kernel Tuner it runs our strategies only.

Files that repeat another recording (convolution_A100_T4 is convolution_A100 as a T4
file) are left out, so no recording counts twice, and files with small budgets get
more runs (``repeats_for`` in cv_search.py: about as many evaluations per file; at
most ``--max-repeats``), so their scores are not a handful of picks' luck. Every row
replays the same files with the same seeds; the summary counts, per row, the spaces
where it scored below random search (0) and those where it came within 5% of the
optimum in at most 1/5 of random search's expected evaluations (issue 12's goal, on
spaces where that expectation is at least 10).
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrix products, several processes: see cv_search.py
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tunesvc.replay.score import ReplayRun, default_budget, run_once, summarize  # noqa: E402
from cv_search import distinct, family, repeats_for, runner  # noqa: E402

OURS = ("ensemble", "random")
#: the reference rows of issue 12; genetic_algorithm, greedy_ils, dual_annealing and random_sample also run
KT = ("pso", "diff_evo", "simulated_annealing")

_kt_files: dict[str, str] = {}


def kt_cache_file(path: str) -> str:
    """Kernel Tuner reads plain JSON only: a decompressed copy, once per process."""
    if path not in _kt_files:
        data = Path(path).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        f = tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False)
        f.write(data)
        f.close()
        _kt_files[path] = f.name
    return _kt_files[path]


def kt_run(path: str, strategy: str, budget: int, seed: int) -> list[float]:
    """Times (seconds) of the distinct feasible configs Kernel Tuner evaluated, in order."""
    import warnings

    import numpy as np
    import kernel_tuner

    random.seed(seed)
    np.random.seed(seed)
    names = runner(path).space.names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results, _ = kernel_tuner.tune_cache(kt_cache_file(path), strategy=strategy,
                                             strategy_options={"max_fevals": budget}, verbose=False, quiet=True)
    seen, times = set(), []
    for r in results:
        key = tuple(r[n] for n in sorted(names))
        if key in seen or not isinstance(r.get("time"), (int, float)):
            continue
        seen.add(key)
        times.append(float(r["time"]) * 1e-3)
    return times[:budget]


def task(args) -> tuple:
    path, impl, strategy, budget, seed = args
    t0 = time.perf_counter()
    if impl == "kt":
        times = kt_run(path, strategy, budget, seed)
    else:
        times = list(run_once(runner(path, failures=impl == "ours"), strategy, budget, seed).times)
    return path, impl, strategy, seed, times, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", nargs="*", default=sorted(str(p) for p in (ROOT.parent / "shared" / "replay").glob("*.json*")))
    ap.add_argument("--repeats", type=int, default=10, help="runs per file of budget 1000 (more for smaller budgets)")
    ap.add_argument("--max-repeats", type=int, default=30, help="runs per file at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--ours", default=",".join(OURS))
    ap.add_argument("--kt", default=",".join(KT), help="Kernel Tuner strategies ('' for none)")
    ap.add_argument("--same-info", default="ensemble", help="our strategies to run also with failed configs removed, as Kernel Tuner sees the files")
    args = ap.parse_args()
    try:
        import kernel_tuner  # noqa: F401
        kt = [s for s in args.kt.split(",") if s]
    except ImportError:
        print("kernel_tuner is not installed: our strategies only (see the docstring)", file=sys.stderr)
        kt = []
    files = distinct(args.files)
    budgets = {f: default_budget(runner(f).recorded.times) for f in files}
    seeds = {f: range(args.seed, args.seed + min(args.max_repeats, repeats_for(budgets[f], args.repeats))) for f in files}
    rows = [("ours", s) for s in args.ours.split(",") if s] + [("ours-ok", s) for s in args.same_info.split(",") if s]
    rows += [("kt", s) for s in kt]
    tasks = [(f, impl, s, budgets[f], seed) for impl, s in rows for f in files for seed in seeds[f]
             if impl != "kt" or runner(f).recorded.format == "kerneltuner"]
    t0 = time.perf_counter()
    with multiprocessing.Pool(args.jobs) as pool:
        done = pool.map(task, tasks, chunksize=1)
    report(done, files, budgets)
    print(f"\n{len(tasks)} runs, seeds from {args.seed}, {args.repeats} runs per file of budget 1000 and more for "
          f"smaller budgets (at most {args.max_repeats}); {time.perf_counter() - t0:.0f} s on {args.jobs} processes")


def report(done, files, budgets) -> None:
    runs: dict[tuple, list] = {}
    seconds: dict[tuple, float] = {}
    for path, impl, strategy, _seed, times, sec in done:
        runs.setdefault((impl, strategy, path), []).append(ReplayRun(tuple(times), len(times), 0.0))
        seconds[(impl, strategy)] = seconds.get((impl, strategy), 0.0) + sec
    rows = {}
    for (impl, strategy, path), rs in runs.items():
        rows.setdefault((impl, strategy), {})[path] = summarize(path, strategy, budgets[path], runner(path).recorded.times, rs)
    short = {f: Path(f).name.split(".")[0].replace("convolution", "conv").replace("dedispersion", "dedisp")[:18] for f in files}
    print("score (Willemsen et al. 2024; 0 = random sampling, 1 = optimum at once) and "
          "median evaluations to within 5% of the optimum / random search's expectation\n")
    head = f"{'strategy':30s} {'fam':>6s} {'mean*':>6s} {'<0':>3s} {'1/5':>5s} " + " ".join(f"{short[f]:>18s}" for f in files) + "  cpu s"
    print(head)
    print("-" * len(head))
    kt_files = [f for f in files if runner(f).recorded.format == "kerneltuner"]
    ordered = sorted(rows, key=lambda k: -family_mean(rows[k]))
    for key in ordered:
        print(row_line(key, rows[key], files, kt_files) + f"  {seconds[key]:.0f}")
    print("\nfam: mean over kernel families of each family's mean score; mean*: over the Kernel Tuner cache files only "
          "(the same files for every row); <0: spaces scored below random search; 1/5: spaces (of those where random "
          "search expects 10 or more evaluations) reached within 5% in at most 1/5 of that")
    print("budget per file (feasible evaluations): " + ", ".join(f"{short[f]} {budgets[f]}" for f in files))


def family_mean(reps: dict) -> float:
    by: dict[str, list[float]] = {}
    for f, r in reps.items():
        by.setdefault(family(f), []).append(r.score)
    return statistics.mean(statistics.mean(v) for v in by.values())


def row_line(key, reps: dict, files, kt_files) -> str:
    cells = []
    for f in files:
        r = reps.get(f)
        cells.append(f"{'-':>18s}" if r is None else
                     f"{r.score:6.3f} {r.median_evals_to_5pct:4.0f}/{r.expected_random_evals_to_5pct:<5.0f}".rjust(18))
    both = statistics.mean(reps[f].score for f in kt_files if f in reps)
    below = sum(r.score < 0 for r in reps.values())
    hard = [r for r in reps.values() if r.expected_random_evals_to_5pct >= 10]
    fifth = sum(r.median_evals_to_5pct <= r.expected_random_evals_to_5pct / 5 for r in hard)
    name = {"kt": "kernel_tuner ", "ours": "tunesvc ", "ours-ok": "tunesvc no failures "}[key[0]] + key[1]
    return f"{name:30s} {family_mean(reps):6.3f} {both:6.3f} {below:3d} {fifth:2d}/{len(hard):<2d} " + " ".join(cells)


if __name__ == "__main__":
    main()
