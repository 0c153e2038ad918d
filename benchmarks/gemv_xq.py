"""gemv_q's XQ parameter (x rounded to 16-bit integers per group, products summed in integer
pairs) on and off, for the config a user gets without tuning.

    cd benchmarks && ../.venv/bin/python gemv_xq.py [--device ID] [--rounds 31]

For each case the lookup answers the shipped config (``tuning_db/``; a database that does not
exist, so nothing tuned on this machine is used). Two configs are derived from it: the same with
XQ=0, and the same with XQ=1 (with UNPACK=1 for int4, ZSUM=0 and XL=0, which XQ=1 needs). Both are
verified against the float64 reference, then timed interleaved (``Evaluator.compare``, the tuner's
method, rounds rotating the order), so a slow spell of the machine hits both alike. GB/s is counted
on the bytes a product reads (codes, scales, zero points, x). The ratio is XQ=0's time over XQ=1's:
above 1, XQ=1 is faster.
"""

from __future__ import annotations

import argparse

from gemv import CASES, SCALES, shape_of
from tunesvc import templates
from tunesvc.devices import open_device
from tunesvc.lookup import lookup
from tunesvc.measure.evaluator import Evaluator, Method
from tunesvc.templates.base import Context
from tunesvc.types import Config

SHOWN = ("RPG", "RPW", "VB", "SPLIT", "UNPACK", "ZSUM", "UR", "GB")


def variants(tpl, shape, shipped) -> tuple[Config, Config]:
    """(XQ=0, XQ=1) forms of the shipped config."""
    off = Config(tpl.check_config({**shipped, "XQ": 0}))
    on = Config(tpl.check_config({**shipped, "XQ": 1, "ZSUM": 0, "XL": 0, "UNPACK": int(shape[3] == 4),
                                  "VB": max(2, shipped["VB"])}))
    return off, on


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="device id or name (default: the default device)")
    ap.add_argument("--rounds", type=int, default=31, help="interleaved rounds, at most")
    args = ap.parse_args()
    device = open_device(args.device)
    print(f"device {device.info.name} [{device.info.fingerprint.driver}]; scales {SCALES}; shipped configs, XQ off and on, "
          f"timed interleaved (at most {args.rounds} rounds)")
    print(f"{'matrix':11s} {'template':9s} {'BxNxKxBITSxG':19s} {'XQ=0 ms':>8s} {'GB/s':>6s} {'XQ=1 ms':>8s} {'GB/s':>6s} "
          f"{'XQ=0/XQ=1':>9s}  shipped config (XQ)")
    seen = set()
    for label, fmt, n, k in CASES:
        name, shape = fmt[0], shape_of(fmt, n, k)
        if (name, shape) in seen:
            continue
        seen.add((name, shape))
        tpl = templates.get(name)
        res = lookup(name, shape, SCALES, device=device.info, db="/nonexistent/tunesvc-bench.db")
        text = f"{label:11s} {name:9s} {'x'.join(map(str, shape)):19s}"
        if res.level != "shipped" or tuple(res.tuned_shape or ()) != tuple(shape):
            print(f"{text} no shipped result at this shape (the lookup answers {res.level})")
            continue
        off, on = variants(tpl, shape, res.config)
        ctx = Context(shape, SCALES, device.info)
        broken = tpl.violations(on, ctx)
        if broken:
            print(f"{text} XQ=1 form not valid here: {', '.join(broken)}")
            continue
        ev = Evaluator(device, tpl, shape, SCALES, Method())
        firsts = [ev.evaluate(c) for c in (off, on)]
        bad = [m for m in firsts if not m.ok]
        if bad:
            print(f"{text} {bad[0].status}: {bad[0].reason}")
            continue
        got = {m.config: m for m in ev.compare([off, on], rounds=args.rounds)}
        a, b = got[off], got[on]
        if not (a.ok and b.ok):
            print(f"{text} failed when re-timed: {(a if not a.ok else b).reason}")
            continue
        nb = tpl.bytes_moved(shape, SCALES)
        cfg = " ".join(f"{p}={res.config[p]}" for p in SHOWN)
        print(f"{text} {a.time * 1e3:8.3f} {nb / a.time / 1e9:6.1f} {b.time * 1e3:8.3f} {nb / b.time / 1e9:6.1f} "
              f"{a.time / b.time:9.2f}  {cfg} ({res.config['XQ']})", flush=True)


if __name__ == "__main__":
    main()
