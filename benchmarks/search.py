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
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tunesvc.replay.runner import RecordedRunner  # noqa: E402
from tunesvc.replay.score import ReplayRun, default_budget, run_once, summarize  # noqa: E402

OURS = ("ensemble", "swarm", "local", "density", "random")
KT = ("pso", "diff_evo", "genetic_algorithm", "greedy_ils", "simulated_annealing", "dual_annealing", "random_sample")

_devices: dict[tuple[str, bool], RecordedRunner] = {}
_kt_files: dict[str, str] = {}


def device(path: str, failures: bool = True) -> RecordedRunner:
    """The recorded file as a device; without ``failures``, its failed configs are dropped
    from the space, as Kernel Tuner's replay drops them."""
    if (path, failures) not in _devices:
        dev = RecordedRunner(path)
        if not failures:
            dev = RecordedRunner(dataclasses.replace(dev.recorded, configs=dev.recorded.valid))
        _devices[(path, failures)] = dev
    return _devices[(path, failures)]


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
    names = device(path).space.names
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
        times = list(run_once(device(path, failures=impl == "ours"), strategy, budget, seed).times)
    return path, impl, strategy, seed, times, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", nargs="*", default=sorted(str(p) for p in (ROOT.parent / "shared" / "replay").glob("*.json*")))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--ours", default=",".join(OURS))
    ap.add_argument("--kt", default=",".join(KT), help="Kernel Tuner strategies ('' for none)")
    ap.add_argument("--same-info", default="", help="our strategies to run also with failed configs removed, as Kernel Tuner sees the files")
    args = ap.parse_args()
    try:
        import kernel_tuner  # noqa: F401
        kt = [s for s in args.kt.split(",") if s]
    except ImportError:
        print("kernel_tuner is not installed: our strategies only (see the docstring)", file=sys.stderr)
        kt = []
    budgets = {f: default_budget(device(f).recorded.times) for f in args.files}
    tasks = [(f, "ours", s, budgets[f], args.seed + r) for f in args.files for s in args.ours.split(",") for r in range(args.repeats)]
    tasks += [(f, "ours-ok", s, budgets[f], args.seed + r) for f in args.files
              for s in args.same_info.split(",") if s for r in range(args.repeats)]
    tasks += [(f, "kt", s, budgets[f], args.seed + r) for f in args.files if device(f).recorded.format == "kerneltuner"
              for s in kt for r in range(args.repeats)]
    t0 = time.perf_counter()
    with multiprocessing.Pool(args.jobs) as pool:
        done = pool.map(task, tasks, chunksize=1)
    report(done, args.files, budgets)
    print(f"\n{len(tasks)} runs, {args.repeats} repeats, seeds {args.seed}..{args.seed + args.repeats - 1}; "
          f"{time.perf_counter() - t0:.0f} s on {args.jobs} processes")


def report(done, files, budgets) -> None:
    runs: dict[tuple, list] = {}
    seconds: dict[tuple, float] = {}
    for path, impl, strategy, _seed, times, sec in done:
        runs.setdefault((impl, strategy, path), []).append(ReplayRun(tuple(times), len(times), 0.0))
        seconds[(impl, strategy)] = seconds.get((impl, strategy), 0.0) + sec
    rows = {}
    for (impl, strategy, path), rs in runs.items():
        rep = summarize(path, strategy, budgets[path], device(path).recorded.times, rs)
        rows.setdefault((impl, strategy), {})[path] = rep
    short = {f: Path(f).name.split(".")[0] for f in files}
    print("score (Willemsen et al. 2024; 0 = random sampling, 1 = optimum at once) and "
          "median evaluations to within 5% of the optimum / random search's expectation\n")
    head = f"{'strategy':34s} {'mean':>6s} {'mean*':>6s} " + " ".join(f"{short[f][:22]:>22s}" for f in files) + "  cpu s"
    print(head)
    print("-" * len(head))
    kt_files = [f for f in files if device(f).recorded.format == "kerneltuner"]
    ordered = sorted(rows, key=lambda k: -statistics.mean(r.score for r in rows[k].values()))
    for key in ordered:
        reps = rows[key]
        cells = []
        for f in files:
            r = reps.get(f)
            cells.append(f"{'-':>22s}" if r is None else
                         f"{r.score:6.3f} {r.median_evals_to_5pct:5.0f}/{r.expected_random_evals_to_5pct:<6.0f}".rjust(22))
        both = statistics.mean(reps[f].score for f in kt_files if f in reps)
        name = {"kt": "kernel_tuner ", "ours": "tunesvc ", "ours-ok": "tunesvc no failures "}[key[0]] + key[1]
        print(f"{name:34s} {statistics.mean(r.score for r in reps.values()):6.3f} {both:6.3f} " + " ".join(cells)
              + f"  {seconds[key]:.0f}")
    print("\nmean: over the files the strategy ran on; mean*: over the Kernel Tuner cache files only (the same files for every row)")
    print("budget per file (feasible evaluations): " + ", ".join(f"{short[f]} {budgets[f]}" for f in files))


if __name__ == "__main__":
    main()
