"""Tuned matmul against the template default and numpy, on the default device.

    .venv/bin/python benchmarks/matmul.py [--sizes 256,512,1024] [--trials 60] [--strategy NAME]

For each N: GFLOP/s of the default config and of the tuned best (device event
times, median), numpy's float32 GFLOP/s measured in the same run (wall clock,
median of 7, interleaved with nothing else of ours running), the ratio
tuned/numpy, the trials and the wall time of the tuning. Then the median warm
latency of ``tunesvc.lookup``. Tuning goes to a temporary database, seeded
from nothing, so every run measures a full search.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import tunesvc
from tunesvc.search import DEFAULT_STRATEGY
from tunesvc.tuner import tune


def numpy_gflops(n: int, reps: int = 7) -> float:
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times) * 1e-9


def lookup_latency(db: Path, device, shape, reps: int = 20000) -> tuple[float, float]:
    tunesvc.lookup("matmul", shape, device=device, db=db)  # warm
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        tunesvc.lookup("matmul", shape, device=device, db=db)
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return samples[len(samples) // 2] / 1e3, samples[int(len(samples) * 0.99)] / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--strategy", default=DEFAULT_STRATEGY)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    db = Path(tempfile.mkdtemp(prefix="tunesvc-bench-")) / "bench.db"

    rows = []
    device_name = ""
    for n in sizes:
        t0 = time.perf_counter()
        r = tune("matmul", (n, n, n), db=db, strategy=args.strategy, trials=args.trials, seed=args.seed)
        wall = time.perf_counter() - t0
        device_name = r.device.name
        ref = numpy_gflops(n)
        rows.append((n, r.default.gflops if r.default and r.default.ok else float("nan"), r.best.gflops, ref,
                     r.best.gflops / ref, len(r.measured), wall, dict(r.best.config)))

    print(f"matmul float32 on {device_name}, strategy {args.strategy}, {args.trials} trials per size")
    print(f"{'N':>6} {'default GF/s':>12} {'tuned GF/s':>11} {'numpy GF/s':>11} {'tuned/numpy':>12} {'trials':>7} {'tune s':>8}  best config")
    for n, d, t, ref, ratio, trials, wall, cfg in rows:
        print(f"{n:>6} {d:>12.2f} {t:>11.2f} {ref:>11.2f} {ratio:>12.2f} {trials:>7} {wall:>8.1f}  "
              + " ".join(f"{k}={v}" for k, v in cfg.items()))
    dev = tunesvc.lookup("matmul", (sizes[-1],) * 3, db=db).device_key
    p50, p99 = lookup_latency(db, dev, (sizes[-1],) * 3)
    print(f"warm tunesvc.lookup: median {p50:.2f} us, p99 {p99:.2f} us (device given as its fingerprint key)")


if __name__ == "__main__":
    main()
