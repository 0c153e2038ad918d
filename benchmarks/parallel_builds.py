"""Wall time per trial with and without build workers compiling upcoming candidates.

Every variant tunes the same random sequence of matmul configs (same seed) with an empty
driver program cache (a fresh POCL_CACHE_DIR, pyopencl's cache off), so every build is
cold, as in a first tuning run. ``--build-workers N`` processes compile the next N
candidates while the worker verifies and times the current one.

    .venv/bin/python benchmarks/parallel_builds.py [--trials 12] [--shape 128x128x128]

On this 2-core CPU device the builders compete with PoCL, which times kernels on both
cores: expect a smaller gain here than beside a GPU, and noisier kernel timings while
builders run (which is why builders default to 0 for CPU devices). Shared machine: noisy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from tunesvc.tuning.tuner import tune


def one(workers: int, trials: int, shape, seed: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        os.environ["POCL_CACHE_DIR"] = str(Path(d) / "pocl")  # read by the worker and builder processes
        os.environ["PYOPENCL_NO_CACHE"] = "1"
        r = tune("matmul", shape, db=Path(d) / "t.db", strategy="random", trials=trials, seed=seed, build_workers=workers)
        assert len(r.measured) == trials
        return r.elapsed / trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--shape", default="128x128x128")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    shape = tuple(int(x) for x in args.shape.split("x"))
    variants = (0, 1, 2)
    per_trial = {w: [] for w in variants}
    for rep in range(args.repeats):  # alternate the variants, so a slow spell of the machine hits all
        for w in variants:
            per_trial[w].append(one(w, args.trials, shape, seed=rep))
    ref = min(per_trial[0])
    print(f"matmul {args.shape}, {args.trials} random trials, cold program cache, best of {args.repeats}")
    print(f"{'build workers':>13}  {'s/trial':>8}  {'vs none':>8}")
    for w in variants:
        best = min(per_trial[w])
        print(f"{w:>13}  {best:>8.2f}  {best / ref:>7.2f}x")


if __name__ == "__main__":
    main()
