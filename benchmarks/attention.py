"""Fused attention: decode as a fraction of the measured copy bandwidth, prefill GFLOP/s
against numpy doing the same math in float32 in the same run; tuned vs default config.

    cd benchmarks && ../.venv/bin/python attention.py [--trials 20] [--db bench.db]

Decode reads K and V of 1x8x32768x128 float32 (256 MiB, 8x the 32 MiB L3). On a CPU the
best configs use MAP=1 (one work-item streams the keys of a query block).
The machine may be shared: timings are noisy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tunesvc.devices import open_device
from tunesvc.templates import get
from tunesvc.tuner import tune

from reduce import ceilings  # noqa: E402  (benchmarks/ is the script's folder)

DECODE = [("attention", (1, 8, 1, 32768, 128)), ("attention_causal", (1, 8, 4, 32768, 128))]
PREFILL = [("attention", (1, 4, 1024, 1024, 64)), ("attention_causal", (1, 4, 1024, 1024, 64))]


def numpy_attention(q, k, v, scale, causal):
    """The same math in float32 numpy (matrix products on its BLAS), one head at a time."""
    out = np.empty_like(q)
    nq, nkv = q.shape[2], k.shape[2]
    mask = np.arange(nkv)[None, :] > np.arange(nq)[:, None] + nkv - nq
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            s = q[b, h] @ k[b, h].T * np.float32(scale)
            if causal:
                s[mask] = -np.inf
            s -= s.max(axis=1, keepdims=True)
            p = np.exp(s)
            out[b, h] = (p @ v[b, h]) / p.sum(axis=1, keepdims=True)
    return out


def numpy_gflops(name, shape) -> float:
    tpl = get(name)
    inputs = tpl.make_inputs(shape, "float32", np.random.default_rng(0))
    args = (inputs["Q"], inputs["K"], inputs["V"], float(inputs["scale"][0]), tpl.causal)
    numpy_attention(*args)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        numpy_attention(*args)
        best = min(best, time.perf_counter() - t0)
    return tpl.flops(shape) / best * 1e-9


def fmt(shape) -> str:
    return "x".join(map(str, shape))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--db", default=None)
    args = ap.parse_args()
    if args.db is None:
        import tempfile

        args.db = tempfile.mkdtemp() + "/bench.db"
    device = open_device(None)
    c = ceilings(args.db, device)
    print(f"device {device.info.name}; copy bandwidth {c.gbps:.2f} GB/s; FMA {c.gflops:.1f} GFLOP/s; {args.trials} trials per case")
    print("decode (bandwidth-bound)")
    print(f"{'template':<17} {'shape':<20} {'default GB/s':>12} {'tuned GB/s':>10} {'tuned/ceiling':>13} {'tuned/default':>13}  best config")
    for name, shape in DECODE:
        r = tune(name, shape, trials=args.trials, seed=0, db=args.db)
        dg = r.default.gbps if r.default and r.default.ok else float("nan")
        print(f"{name:<17} {fmt(shape):<20} {dg:>12.2f} {r.best.gbps:>10.2f} {r.best.gbps / c.gbps:>13.0%} {r.best.gbps / dg:>13.2f}  "
              + " ".join(f"{k}={v}" for k, v in r.best.config.items()), flush=True)
    print("prefill (compute-bound)")
    print(f"{'template':<17} {'shape':<20} {'default GFLOP/s':>15} {'tuned GFLOP/s':>13} {'numpy GFLOP/s':>13} {'tuned/numpy':>11} {'tuned/FMA':>9}  best config")
    for name, shape in PREFILL:
        r = tune(name, shape, trials=args.trials, seed=0, db=args.db)
        dg = r.default.gflops if r.default and r.default.ok else float("nan")
        ng = numpy_gflops(name, shape)
        print(f"{name:<17} {fmt(shape):<20} {dg:>15.2f} {r.best.gflops:>13.2f} {ng:>13.2f} {r.best.gflops / ng:>11.2f} {r.best.gflops / c.gflops:>9.0%}  "
              + " ".join(f"{k}={v}" for k, v in r.best.config.items()), flush=True)


if __name__ == "__main__":
    main()
