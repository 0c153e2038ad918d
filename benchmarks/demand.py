"""The cost of demand recording on a warm lookup (issue 16; goal: under 1 us added).

A warm lookup of a problem the database answers exactly (``exact``) and of one it answers from a
nearby shape (``nearest_shape``: a miss, counted as demand), with recording on and off
(``$TUNESVC_DEMAND``), in the same run: each repetition times ``--calls`` lookups in a row per case
and setting, the settings in alternating order, and the table gives the median over
``--reps`` repetitions in ns per lookup, and the median of the paired differences (on minus off
within one repetition, which cancels the drift of a shared machine). The counts go to a buffer that does not write while the
loops run; the write itself is timed apart: one flush of ``--problems`` distinct problems, and
the first lookup after it (a write by another connection changes the file's data version, so
each problem's next lookup is resolved again, once per flush).

    .venv/bin/python benchmarks/demand.py [--reps 601] [--calls 2000] [--problems 100]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tunesvc.lookup  # noqa: F401  (the module: tunesvc.lookup the attribute is the function)
from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cache.demand import Buffer
from tunesvc.templates.base import Context
from tunesvc.types import Fingerprint, Measurement, Record, Timing

lookup_mod = sys.modules["tunesvc.lookup"]
DEVICE = Fingerprint("opencl", "AMD", "cpu", "znver3", "bench CPU", "1.0")
EXACT, MISS = (64, 64, 64), (100, 64, 64)


def make_db(path: Path) -> Path:
    tpl = templates.get("matmul")
    ctx = Context(EXACT, "float32", None)
    configs = list(itertools.islice((c for c in tpl.all_configs() if tpl.is_valid(c, ctx)), 20))
    store = Store(path)
    store.put_many([Record(DEVICE, tpl.name, tpl.source_hash, "float32", EXACT,
                           Measurement(c, "ok", timing=Timing(t, t, t, 0, 5), gflops=1.0, gbps=1.0))
                    for i, c in enumerate(configs) for t in [1e-3 * (i + 1)]])
    store.close()
    return path


def warm_ns(shape, db: str, calls: int) -> float:
    lookup = lookup_mod.lookup
    key = DEVICE.key
    lookup("matmul", shape, "float32", key, db)  # resolved once: the loop below is warm
    start = time.perf_counter_ns()
    for _ in range(calls):
        lookup("matmul", shape, "float32", key, db)
    return (time.perf_counter_ns() - start) / calls


def setting(on: bool) -> None:
    os.environ["TUNESVC_DEMAND"] = "1" if on else "0"
    lookup_mod.clear_cache()  # the setting is read when a lookup is resolved


def hot_path(db: str, reps: int, calls: int) -> dict:
    """Per case and setting, the median ns per lookup; and per case the median of the paired
    differences (on minus off, measured back to back in each repetition: the machine's drift cancels)."""
    times: dict = {(case, on): [] for case in ("exact", "miss") for on in (False, True)}
    diffs: dict = {"exact": [], "miss": []}
    for rep in range(reps):
        got = {}
        for on in ((False, True) if rep % 2 == 0 else (True, False)):
            setting(on)
            for case, shape in (("exact", EXACT), ("miss", MISS)):
                got[case, on] = warm_ns(shape, db, calls)
                times[case, on].append(got[case, on])
        for case in diffs:
            diffs[case].append(got[case, True] - got[case, False])
    out = {k: statistics.median(v) for k, v in times.items()}
    for case, d in diffs.items():
        q = statistics.quantiles(d, n=4)
        out[case, "diff"] = (statistics.median(d), q[0], q[2])
    return out


def add_ns(buffer: Buffer, reps: int, calls: int) -> float:
    """Median ns of counting one warm miss alone (``tally.append(1)``, what recording adds to one)."""
    tally = buffer.tally(("/nowhere.db", "matmul", "0" * 16, "float32", "100x64x64", DEVICE.key))
    out = []
    for _ in range(reps):
        start = time.perf_counter_ns()
        for _ in range(calls):
            tally.append(1)
        out.append((time.perf_counter_ns() - start) / calls)
        buffer.take()
    return statistics.median(out)


def flush_cost(db: str, buffer: Buffer, problems: int, reps: int) -> tuple[float, float]:
    """(median ms of one flush of ``problems`` distinct problems, median us of the first lookup after it)."""
    setting(True)
    flushes, firsts = [], []
    for _ in range(reps):
        for m in range(problems):
            lookup_mod.lookup("matmul", (65 + m, 64, 64), "float32", DEVICE.key, db)
        lookup_mod.lookup("matmul", MISS, "float32", DEVICE.key, db)
        start = time.perf_counter()
        buffer.flush()
        flushes.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        lookup_mod.lookup("matmul", MISS, "float32", DEVICE.key, db)
        firsts.append((time.perf_counter() - start) * 1e6)
    return statistics.median(flushes), statistics.median(firsts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=601)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--problems", type=int, default=100)
    args = ap.parse_args()
    os.environ["TUNESVC_SHIPPED_DB"] = os.path.join(tempfile.gettempdir(), "tunesvc-bench-no-shipped")
    buffer = Buffer(interval=3600)  # writes only when flush_cost says
    lookup_mod._DEMAND = buffer
    with tempfile.TemporaryDirectory(prefix="tunesvc-demand-") as tmp:
        db = str(make_db(Path(tmp) / "bench.db"))
        med = hot_path(db, args.reps, args.calls)
        buffer.take()
        add = add_ns(buffer, args.reps, args.calls)
        flush_ms, first_us = flush_cost(db, buffer, args.problems, max(5, args.reps // 3))
    print(f"warm lookup, ns per call: median of {args.reps} repetitions of {args.calls} calls, on and off alternating;")
    print("added: the median (and quartiles) of the paired differences, on minus off in each repetition")
    print("| lookup | recording off | recording on | added | quartiles of added |")
    print("|---|---:|---:|---:|---:|")
    for case, label in (("exact", "exact hit (64x64x64)"), ("miss", "miss: nearest_shape (100x64x64)")):
        off, on = med[case, False], med[case, True]
        d, q1, q3 = med[case, "diff"]
        print(f"| {label} | {off:,.0f} | {on:,.0f} | {d:+,.0f} | {q1:+,.0f} .. {q3:+,.0f} |")
    print(f"| the count alone (tally.append(1), loop included) | | | {add:+,.0f} | |")
    print()
    print(f"one flush of {args.problems + 1} distinct problems: {flush_ms:.2f} ms (in the writer thread, every 5 s while "
          f"there are misses); the next lookup of a problem after it: {first_us:,.0f} us (resolved again, once per flush)")


if __name__ == "__main__":
    main()
