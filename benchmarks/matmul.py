"""Tuned matmul against the template default and numpy, on the default device (or --device).

    .venv/bin/python benchmarks/matmul.py [--sizes 256,512,1024] [--trials 60] [--strategy NAME] [--device ID]

For each N: GFLOP/s of the default config and of the tuned best (device event
times, median), numpy's float32 GFLOP/s measured in the same run (wall clock,
median and best, in child processes: native with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset, pinned with the environment as is; see reference.py),
the ratio tuned/numpy against the native median, the trials and the wall time
of the tuning; then the OpenBLAS kernel each mode ran. Then the median warm
latency of ``tunesvc.lookup``. Tuning goes to a temporary database, seeded
from nothing, so every run measures a full search.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import reference  # benchmarks/ is the script's folder
import tunesvc
from tunesvc.search import DEFAULT_STRATEGY
from tunesvc.tuning.tuner import tune


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
    ap.add_argument("--device", default=None, help="device id, fingerprint key or name (default: the default device)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    db = Path(tempfile.mkdtemp(prefix="tunesvc-bench-")) / "bench.db"

    rows = []
    device_name = ""
    for n in sizes:
        t0 = time.perf_counter()
        r = tune("matmul", (n, n, n), device=args.device, db=db, strategy=args.strategy, trials=args.trials, seed=args.seed)
        wall = time.perf_counter() - t0
        device_name = f"{r.device.name} [{r.device.fingerprint.driver}]"
        refs = reference.measure_both({"kind": "matmul", "n": n})
        rows.append((n, r.default.gflops if r.default and r.default.ok else float("nan"), r.best.gflops, refs,
                     reference.ratio(r.best.gflops, refs), len(r.measured), wall, dict(r.best.config)))

    print(f"matmul float32 on {device_name}, strategy {args.strategy}, {args.trials} trials per size")
    print(f"{'N':>6} {'default GF/s':>12} {'tuned GF/s':>11} {'numpy native med/best':>21} {'numpy pinned med/best':>21} "
          f"{'tuned/numpy':>12} {'trials':>7} {'tune s':>8}  best config")
    for n, d, t, refs, ratio, trials, wall, cfg in rows:
        print(f"{n:>6} {d:>12.2f} {t:>11.2f} {reference.cell(refs['native']):>21} {reference.cell(refs['pinned']):>21} "
              f"{ratio:>12.2f} {trials:>7} {wall:>8.1f}  " + " ".join(f"{k}={v}" for k, v in cfg.items()))
    print("\n".join(reference.summary([row[3] for row in rows])))
    dev = tunesvc.lookup("matmul", (sizes[-1],) * 3, device=args.device, db=db).device_key
    p50, p99 = lookup_latency(db, dev, (sizes[-1],) * 3)
    print(f"warm tunesvc.lookup: median {p50:.2f} us, p99 {p99:.2f} us (device given as its fingerprint key)")


if __name__ == "__main__":
    main()
