"""Fused attention: decode as a fraction of the measured read and copy bandwidth, prefill GFLOP/s
against numpy doing the same math unfused in float32 in the same run; tuned vs default config.

    cd benchmarks && ../.venv/bin/python attention.py [--trials 20] [--db bench.db] [--device ID] [--no-big]

Decode (BxHqxHkvxQxKVxD) is grouped-query, Llama-3's 32 query heads over 8 KV heads of 128 at a
32768-token cache (K and V 256 MiB in float32, 8x the 32 MiB L3; float16 too where the device has
cl_khr_fp16), and the four causal queries of 8 heads that the issue measured at 23%; it writes
little, so its ceiling is the read bandwidth (the copy fraction beside it). Prefill is per head,
1024x1024x64 (4 heads) and 4096x4096x128 (one; --no-big leaves it out), causal and not; the line
under the table gives each causal case's speedup over its own non-causal time (it skips half the
pairs). Under the decode table, each tiled winner is measured again with each order of its P·V
(PVO; 0 is the order before that parameter existed), interleaved in the same rounds. numpy's
prefill runs in child processes, native and with the pinned OpenBLAS environment
(see reference.py); the ratio is against the native median. The machine may be shared: timings
are noisy, and the ceilings are probed again after the cases, the fractions being of the higher probe.
"""

from __future__ import annotations

import argparse

import reference  # benchmarks/ is the script's folder
from reduce import bandwidth_cells, ceilings, ceilings_header, failed_row, reprobe
from tunesvc import templates
from tunesvc.devices import open_device
from tunesvc.measure.evaluator import Evaluator, Method
from tunesvc.tuning.tuner import tune
from tunesvc.types import Config

DECODE = [("attention", (1, 32, 8, 1, 32768, 128)), ("attention_causal", (1, 8, 8, 4, 32768, 128))]
PREFILL = [("attention", (1, 4, 4, 1024, 1024, 64)), ("attention_causal", (1, 4, 4, 1024, 1024, 64))]
PREFILL_BIG = [("attention", (1, 1, 1, 4096, 4096, 128)), ("attention_causal", (1, 1, 1, 4096, 4096, 128))]


def fmt(shape) -> str:
    return "x".join(map(str, shape))


def config(r) -> str:
    return " ".join(f"{k}={v}" for k, v in r.best.config.items())


def run(args, device):
    """Tune every case; (decode results, prefill results with their numpy references)."""
    decode, prefill = [], []
    # the grouped-query case in float16 too (a KV cache of half the bytes) where the device has it
    cases = [(*DECODE[0], "float32")] + ([(*DECODE[0], "float16")] if device.info.fp16 else []) + [(*DECODE[1], "float32")]
    for name, shape, dtype in cases:
        print(f"tuning {name} {fmt(shape)} {dtype} ...", flush=True)
        decode.append((name, shape, dtype, tune(name, shape, dtype, device.info, trials=args.trials, seed=0, db=args.db)))
    for name, shape in PREFILL + ([] if args.no_big else PREFILL_BIG):
        print(f"tuning {name} {fmt(shape)} ...", flush=True)
        r = tune(name, shape, trials=args.trials, seed=0, db=args.db, device=device.info)
        prefill.append((name, shape, r, reference.measure_both({"kind": "attention", "template": name, "shape": list(shape)})))
    return decode, prefill


def print_decode(decode, c) -> None:
    print("decode (read-bandwidth-bound)")
    print(f"{'template':<17} {'shape':<20} {'dtype':<8} {'default GB/s':>12} {'tuned GB/s':>10} {'tuned/read':>10} {'tuned/copy':>10} "
          f"{'tuned/default':>13}  best config")
    for name, shape, dtype, r in decode:
        if (line := failed_row(name, shape, r)) is not None:
            print(line)
            continue
        print(f"{name:<17} {fmt(shape):<20} {dtype:<8} {bandwidth_cells(r, c)}  {config(r)}")


def value_order_lines(decode, device) -> list[str]:
    """Each tiled decode winner against itself with P·V by head-dim chunk (PVO=0, the order before
    PVO existed), interleaved round by round so a busy spell of the machine is shared."""
    lines = []
    for name, shape, dtype, r in decode:
        if not (r.best and r.best.ok) or r.best.config["MAP"] < 2:
            continue
        tuned = r.best.config
        others = [Config({**tuned, "PVO": o}) for o in (0, 1, 2) if o != tuned["PVO"]]
        ev = Evaluator(device, templates.get(name), shape, dtype, Method.plain(1))
        ok = [cfg for cfg in [tuned, *others] if ev.evaluate(cfg).ok]
        got = {m.config["PVO"]: m.gbps for m in ev.compare(ok, rounds=9) if m.ok}
        cells = ", ".join(f"PVO={o} {g:.2f}" for o, g in sorted(got.items()))
        lines.append(f"{name} {fmt(shape)} {dtype}, the tuned config with each PVO, interleaved: {cells} GB/s"
                     + (f" (tuned/PVO=0 {got[tuned['PVO']] / got[0]:.2f}x)" if 0 in got and tuned["PVO"] in got else ""))
    return lines


def print_prefill(prefill, c) -> None:
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
    times = {(name, shape[3:]): r.best.timing.median for name, shape, r, _ in prefill if r.best and r.best.ok}
    for (name, rest), t in times.items():
        plain = times.get(("attention", rest))
        if name == "attention_causal" and plain:
            print(f"causal {'x'.join(map(str, rest))}: {plain * 1e3:.2f} ms without the mask, {t * 1e3:.2f} ms with it: {plain / t:.2f}x")
    print("\n".join(reference.summary([refs for *_, refs in prefill])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--db", default=None)
    ap.add_argument("--device", default=None, help="device id, fingerprint key or name (default: the default device)")
    ap.add_argument("--no-big", action="store_true", help="leave out the 4096x4096x128 prefill (minutes of numpy and tuning)")
    args = ap.parse_args()
    if args.db is None:
        import tempfile

        args.db = tempfile.mkdtemp() + "/bench.db"
    device = open_device(args.device)
    before = ceilings(args.db, device)
    decode, prefill = run(args, device)
    orders = value_order_lines(decode, device)
    c = reprobe(device, before)
    print(ceilings_header(device, c, args.trials))
    print_decode(decode, c)
    print("\n".join(orders))
    print_prefill(prefill, c)


if __name__ == "__main__":
    main()
