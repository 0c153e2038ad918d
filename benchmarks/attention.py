"""Fused attention: decode as a fraction of the measured read bandwidth, prefill GFLOP/s
against numpy doing the same math unfused in float32 in the same run; tuned vs default config.

    cd benchmarks && ../.venv/bin/python attention.py [--trials 20] [--db bench.db] [--device ID]

Decode reads K and V of 1x8x32768x128 float32 (256 MiB, 8x the 32 MiB L3) and writes little:
its ceiling is the read bandwidth (the copy fraction is printed beside it). On a CPU the best
configs use MAP=1 (one work-item streams the keys of a query block). numpy's prefill runs in
child processes, native and with the pinned OpenBLAS environment (see reference.py); the
ratio is against the native median. The machine may be shared: timings are noisy, and the
ceilings are probed again after the cases, the fractions being of the higher probe.
"""

from __future__ import annotations

import argparse

import reference  # benchmarks/ is the script's folder
from reduce import bandwidth_cells, ceilings, ceilings_header, failed_row, reprobe
from tunesvc.devices import open_device
from tunesvc.tuning.tuner import tune

DECODE = [("attention", (1, 8, 1, 32768, 128)), ("attention_causal", (1, 8, 4, 32768, 128))]
PREFILL = [("attention", (1, 4, 1024, 1024, 64)), ("attention_causal", (1, 4, 1024, 1024, 64))]


def fmt(shape) -> str:
    return "x".join(map(str, shape))


def config(r) -> str:
    return " ".join(f"{k}={v}" for k, v in r.best.config.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--db", default=None)
    ap.add_argument("--device", default=None, help="device id, fingerprint key or name (default: the default device)")
    args = ap.parse_args()
    if args.db is None:
        import tempfile

        args.db = tempfile.mkdtemp() + "/bench.db"
    device = open_device(args.device)
    before = ceilings(args.db, device)
    decode, prefill = [], []
    for name, shape in DECODE:
        print(f"tuning {name} {fmt(shape)} ...", flush=True)
        decode.append((name, shape, tune(name, shape, trials=args.trials, seed=0, db=args.db, device=device.info)))
    for name, shape in PREFILL:
        print(f"tuning {name} {fmt(shape)} ...", flush=True)
        r = tune(name, shape, trials=args.trials, seed=0, db=args.db, device=device.info)
        prefill.append((name, shape, r, reference.measure_both({"kind": "attention", "template": name, "shape": list(shape)})))
    c = reprobe(device, before)
    print(ceilings_header(device, c, args.trials))

    print("decode (read-bandwidth-bound)")
    print(f"{'template':<17} {'shape':<20} {'default GB/s':>12} {'tuned GB/s':>10} {'tuned/read':>10} {'tuned/copy':>10} {'tuned/default':>13}  best config")
    for name, shape, r in decode:
        if (line := failed_row(name, shape, r)) is not None:
            print(line)
            continue
        print(f"{name:<17} {fmt(shape):<20} {bandwidth_cells(r, c)}  {config(r)}")

    print("prefill (compute-bound)")
    print(f"{'template':<17} {'shape':<20} {'default GFLOP/s':>15} {'tuned GFLOP/s':>13} {'numpy native med/best':>21} "
          f"{'numpy pinned med/best':>21} {'tuned/numpy':>11} {'tuned/FMA':>9} {'tuned/peak':>10}  best config")
    for name, shape, r, refs in prefill:
        if (line := failed_row(name, shape, r)) is not None:
            print(line)
            continue
        dg = r.default.gflops if r.default and r.default.ok else float("nan")
        peak = f"{r.best.gflops / c.peak_gflops:.0%}" if c.peak_gflops else "-"
        print(f"{name:<17} {fmt(shape):<20} {dg:>15.2f} {r.best.gflops:>13.2f} {reference.cell(refs['native']):>21} "
              f"{reference.cell(refs['pinned']):>21} {reference.ratio(r.best.gflops, refs):>11.2f} {r.best.gflops / c.gflops:>9.0%} "
              f"{peak:>10}  {config(r)}")
    print("\n".join(reference.summary([refs for *_, refs in prefill])))


if __name__ == "__main__":
    main()
