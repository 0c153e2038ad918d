"""Reductions as a fraction of the measured read bandwidth, tuned vs default config.

    .venv/bin/python benchmarks/reduce.py [--trials 20] [--db bench.db] [--device ID]

Sizes are 256 MiB of float32, 8x the 32 MiB L3 of the development machine, so
the data comes from memory. A reduction reads its input once and writes one
value per row, so its ceiling is the read bandwidth (the probe's ts_read), not
the copy bandwidth, whose writes cost a CPU a read for ownership as well; the
copy fraction is printed beside it. The machine may be shared and timings are
noisy: the ceilings are probed again after the cases, and the fractions are of
the higher of the two probes (a ceiling measured while others load the machine
is too low). numpy's own reduction on the same array is a reference, measured
in child processes (native and pinned OpenBLAS environment, see reference.py;
numpy's reductions do not call BLAS, so the two should agree).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import reference  # benchmarks/ is the script's folder
from tunesvc.measure import roofline
from tunesvc.cache import Store
from tunesvc.devices import open_device
from tunesvc.tuning.tuner import tune

CASES = [("reduce_sum", (4096, 16384)), ("reduce_sum", (1, 1 << 26)), ("reduce_max", (4096, 16384)), ("reduce_sumsq", (64, 1 << 20))]


def ceilings(db: str, device) -> roofline.Ceilings:
    """The device's stored ceilings, probed (and stored) where there are none or where they
    predate the read-bandwidth probe."""
    store = Store(db)
    c = roofline.stored(store, device.info.fingerprint.key)
    return c if c is not None and c.read_gbps else roofline.measure_and_store(store, device)


def higher(a: roofline.Ceilings, b: roofline.Ceilings) -> roofline.Ceilings:
    """Each ceiling the higher of two probes (the details, read figure included, of the one
    that read faster)."""
    top = a if (a.read_gbps or 0) >= (b.read_gbps or 0) else b
    return dataclasses.replace(top, gbps=max(a.gbps, b.gbps), gflops=max(a.gflops, b.gflops))


def reprobe(device, before: roofline.Ceilings) -> roofline.Ceilings:
    """Probe again after the cases; print both; the higher of each."""
    after = roofline.probe(device)
    print(f"ceilings probed before / after the cases: copy {before.gbps:.2f} / {after.gbps:.2f} GB/s; "
          f"read {before.read_gbps:.2f} / {after.read_gbps:.2f} GB/s; FMA {before.gflops:.1f} / {after.gflops:.1f} GFLOP/s; "
          "fractions are of the higher")
    return higher(before, after)


def ceilings_header(device, c: roofline.Ceilings, trials: int) -> str:
    return (f"device {device.info.name} [{device.info.fingerprint.driver}]; copy bandwidth {c.gbps:.2f} GB/s; "
            f"read bandwidth {c.read_gbps:.2f} GB/s; FMA {c.gflops:.1f} GFLOP/s, {roofline.peak_text(c)}; {trials} trials per case")


def bandwidth_cells(r, c) -> str:
    """Default and tuned GB/s of a read-bound case, tuned as fractions of read and copy
    bandwidth, and tuned over default: the cells reduce.py and attention.py share."""
    dg = r.default.gbps if r.default and r.default.ok else float("nan")
    b = r.best.gbps
    return f"{dg:>12.2f} {b:>10.2f} {b / c.of('read_bandwidth'):>10.0%} {b / c.gbps:>10.0%} {b / dg:>13.2f}"


def failed_row(name: str, shape, r) -> str | None:
    """A line for a case no config of which measured ok, else None."""
    if r.best is not None and r.best.ok:
        return None
    reasons = sorted({f"{m.status}: {m.reason}" for m in r.measured if not m.ok})[:2]
    return f"{name:<13} {'x'.join(map(str, shape)):<12} no config measured ok in {len(r.measured)} trials ({'; '.join(reasons) or '-'})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--db", default=str(Path(tempfile.mkdtemp()) / "bench.db"))
    ap.add_argument("--device", default=None, help="device id, fingerprint key or name (default: the default device)")
    args = ap.parse_args()
    device = open_device(args.device)
    before = ceilings(args.db, device)
    results = []
    for name, shape in CASES:
        print(f"tuning {name} {'x'.join(map(str, shape))} ...", flush=True)
        r = tune(name, shape, trials=args.trials, seed=0, db=args.db, device=device.info)
        refs = reference.measure_both({"kind": "reduce", "template": name, "shape": list(shape)})
        results.append((name, shape, r, refs))
    c = reprobe(device, before)
    print(ceilings_header(device, c, args.trials))
    print(f"{'template':<13} {'shape':<12} {'default GB/s':>12} {'tuned GB/s':>10} {'tuned/read':>10} {'tuned/copy':>10} "
          f"{'tuned/default':>13} {'numpy native med/best':>21} {'numpy pinned med/best':>21} {'tuned/numpy':>11}  best config")
    for name, shape, r, refs in results:
        if (line := failed_row(name, shape, r)) is not None:
            print(line)
            continue
        b = r.best
        print(f"{name:<13} {'x'.join(map(str, shape)):<12} {bandwidth_cells(r, c)} {reference.cell(refs['native']):>21} {reference.cell(refs['pinned']):>21} "
              f"{reference.ratio(b.gbps, refs):>11.2f}  {' '.join(f'{k}={v}' for k, v in b.config.items())}")
    print("\n".join(reference.summary([refs for *_, refs in results])))


if __name__ == "__main__":
    main()
