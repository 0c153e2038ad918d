"""Reductions as a fraction of the measured copy bandwidth, tuned vs default config.

    .venv/bin/python benchmarks/reduce.py [--trials 20] [--db bench.db]

Sizes are 256 MiB of float32, 8x the 32 MiB L3 of the development machine, so
the data comes from memory. numpy's own reduction on the same array, timed in
the same run, is a reference. The machine may be shared: timings are noisy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tunesvc import roofline
from tunesvc.cache import Store
from tunesvc.devices import open_device
from tunesvc.tuner import tune

CASES = [("reduce_sum", (4096, 16384)), ("reduce_sum", (1, 1 << 26)), ("reduce_max", (4096, 16384)), ("reduce_sumsq", (64, 1 << 20))]
NUMPY = {"reduce_sum": lambda x: x.sum(axis=1), "reduce_max": lambda x: x.max(axis=1), "reduce_sumsq": lambda x: np.einsum("ij,ij->i", x, x)}


def numpy_gbps(name: str, shape) -> float:
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    fn = NUMPY[name]
    fn(x)
    best = min(_timed(fn, x) for _ in range(5))
    return x.nbytes / best * 1e-9


def _timed(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def ceilings(db: str, device):
    store = Store(db)
    c = roofline.stored(store, device.info.fingerprint.key)
    return c or roofline.measure_and_store(store, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--db", default=str(Path(tempfile.mkdtemp()) / "bench.db"))
    args = ap.parse_args()
    device = open_device(None)
    c = ceilings(args.db, device)
    print(f"device {device.info.name}; copy bandwidth {c.gbps:.2f} GB/s; FMA {c.gflops:.1f} GFLOP/s; {args.trials} trials per case")
    print(f"{'template':<13} {'shape':<12} {'default GB/s':>12} {'tuned GB/s':>10} {'tuned/ceiling':>13} {'tuned/default':>13} {'numpy GB/s':>10}  best config")
    for name, shape in CASES:
        r = tune(name, shape, trials=args.trials, seed=0, db=args.db)
        d, b = r.default, r.best
        dg = d.gbps if d and d.ok else float("nan")
        print(f"{name:<13} {'x'.join(map(str, shape)):<12} {dg:>12.2f} {b.gbps:>10.2f} {b.gbps / c.gbps:>13.0%} {b.gbps / dg:>13.2f} "
              f"{numpy_gbps(name, shape):>10.2f}  {' '.join(f'{k}={v}' for k, v in b.config.items())}", flush=True)


if __name__ == "__main__":
    main()
