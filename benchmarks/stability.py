"""Does repeated tuning pick the same best config? The measurement method against a plain median of 5.

A small matmul whose candidates are close (within ~30% of each other, the case where noise
decides) is tuned over and over from an empty database with the grid strategy, so every run
measures the same candidates and only the measurement differs. The agreement rate is the
share of runs whose chosen best is the most common choice of that method.

    .venv/bin/python benchmarks/stability.py [--runs 8] [--shape 64x64x64]

The machine is shared and noisy on purpose: that is what the method is for.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

from tunesvc import templates
from tunesvc.measure.evaluator import Method
from tunesvc.templates.base import Param
from tunesvc.templates.matmul import Matmul
from tunesvc.tuning.tuner import tune

#: the candidates: one neighbourhood of good matmul configs on a CPU (2 x 2 x 2 = 8 configs)
NARROW = {"MDIM": (8,), "NDIM": (8,), "WPTM": (4,), "WPTN": (4,), "VW": (1, 4), "UNROLL": (1, 4), "PACKB": (0, 1)}


class CloseMatmul(Matmul):
    """matmul restricted to a few close candidates (the kernel is the same)."""

    name = "matmul_close"
    source_file = str(Matmul().source_path())  # the same kernel file, found from here
    params = tuple(
        Param(p.name, NARROW.get(p.name, (p.default,)), NARROW.get(p.name, (p.default,))[0], p.help) for p in Matmul.params
    )


def one_run(method: Method, shape, seed: int) -> tuple[str, float]:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = tune("matmul_close", shape, db=Path(d) / "t.db", strategy="grid", trials=64, seed=seed, method=method)
        best = " ".join(f"{k}={r.best.config[k]}" for k in NARROW if len(NARROW[k]) > 1)
        return best, time.perf_counter() - t0


def agreement(choices: list[str]) -> tuple[float, str]:
    mode, n = collections.Counter(choices).most_common(1)[0]
    return n / len(choices), mode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--shape", default="64x64x64")
    args = ap.parse_args()
    templates.register(CloseMatmul())
    shape = tuple(int(x) for x in args.shape.split("x"))
    methods = {"plain median of 5": Method.plain(5), "tunesvc method": Method()}
    rows = []
    for name, method in methods.items():
        runs = [one_run(method, shape, seed) for seed in range(args.runs)]
        rate, mode = agreement([c for c, _ in runs])
        rows.append((name, rate, mode, sum(t for _, t in runs) / len(runs)))
    candidates = 1
    for values in NARROW.values():
        candidates *= len(values)
    print(f"matmul {args.shape}, {candidates} close candidates, {args.runs} tuning runs per method")
    print(f"{'method':<20} {'agreement':>9}  {'wall s/run':>10}  most common best")
    for name, rate, mode, wall in rows:
        print(f"{name:<20} {rate:>9.0%}  {wall:>10.1f}  {mode}")


if __name__ == "__main__":
    main()
