"""Scale of the tuning database: a generated database of 1,000,000 records.

Measures lookup latency (warm: memo hit; cold: resolved through SQLite, at the
exact level and through the family fallback), export and import throughput,
and file sizes. Every figure comes with a reference measured in the same run
on the same data, so ratios survive a noisy shared machine:

- lookup: one raw indexed point query (SELECT ... WHERE id = ?) on the same file;
- export: a raw SELECT of every row, without formatting or writing;
- import: a raw executemany INSERT of the same rows into an empty database of the same schema.

CPU seconds (all threads of the process) sit beside wall seconds: on a loaded shared machine the
gap between them is time spent waiting for a core.

    .venv/bin/python benchmarks/db_scale.py [--records 1000000] [--dir /tmp/tunesvc-scale]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tunesvc.lookup  # noqa: F401  (the module: tunesvc.lookup the attribute is the function)
from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cache import exchange
from tunesvc.cache.exchange import _export_query, export, import_files
from tunesvc.cache.store import DEVICE_COLUMNS, RECORD_DEVICES, RECORD_SHAPES, SCHEMA_VERSION, SHAPE_COLUMNS, TABLE
from tunesvc.templates.base import Context
from tunesvc.types import Fingerprint

lookup_mod = sys.modules["tunesvc.lookup"]

VENDORS = (("NVIDIA", "gpu", "sm_{}", "GeForce RTX {}"), ("AMD", "gpu", "gfx{}", "Radeon RX {}"),
           ("Intel", "cpu", "x86_{}", "Core i{}"), ("AMD", "cpu", "znver{}", "EPYC {}"))


def devices(n: int) -> list[Fingerprint]:
    out = []
    for i in range(n):
        vendor, kind, arch, name = VENDORS[i % len(VENDORS)]
        model = 1000 + i // 2  # two driver versions per model: the family level has something to find
        out.append(Fingerprint("opencl", vendor, kind, arch.format(model // 10), name.format(model), f"{i % 2}.0"))
    return out


def rows(n: int, seed: int = 0):
    """``n`` ok records: devices x shapes x configs, every config valid at every shape."""
    tpl = templates.get("matmul")
    shapes = [(m, k, k) for m in (64, 128, 256, 512, 1024) for k in (64, 256, 1024, 4096, 8192)]
    configs = list(itertools.islice((c for c in tpl.all_configs() if tpl.is_valid(c, Context((64, 64, 64), "float32"))), 200))
    per_device = len(shapes) * len(configs)
    fps = devices(-(-n // per_device))
    rng = random.Random(seed)
    count = 0
    for fp in fps:
        for shape in shapes:
            sh = "x".join(map(str, shape))
            for c in configs:
                if count == n:
                    return
                t = rng.uniform(1e-5, 1e-2)
                yield (fp.key, fp.backend, fp.vendor, fp.device_type, fp.architecture, fp.name, fp.driver, "matmul",
                       tpl.source_hash, "float32", sh, c.key, "ok", "", t, t * 0.95, t * 1.1, t * 0.02, 5,
                       2.0 * shape[0] * shape[1] * shape[2] / t * 1e-9, 1.0, 0.1, SCHEMA_VERSION, "0.1.0",
                       "2025-01-01T00:00:00+00:00", "generated")
                count += 1


COLS = ("device_key", "backend", "vendor", "device_type", "architecture", "device_name", "driver", "template",
        "template_hash", "dtype", "shape", "config", "status", "reason", "time_median", "time_min", "time_max",
        "time_iqr", "runs", "gflops", "gbps", "compile_seconds", "schema_version", "tunesvc_version", "created_at", "source")


def insert(path: Path, n: int) -> tuple[float, float]:
    """Fill a database through the store's schema; (wall, CPU) seconds of the raw executemany (the import reference)."""
    store = Store(path)
    sql = f"INSERT INTO {TABLE} ({', '.join(COLS)}) VALUES ({', '.join('?' * len(COLS))})"
    data = list(rows(n))  # generated before the clock starts: the reference is SQLite's work alone
    c0, t0 = time.process_time(), time.perf_counter()
    with store.db.conn:
        store.db.conn.executemany(sql, data)
    seconds = time.perf_counter() - t0, time.process_time() - c0
    with store.db.conn:  # what Store._upsert keeps current; raw inserts bypass it
        store.db.execute(f"INSERT OR IGNORE INTO {RECORD_DEVICES} SELECT DISTINCT {', '.join(DEVICE_COLUMNS)} FROM {TABLE}")
        store.db.execute(f"INSERT OR IGNORE INTO {RECORD_SHAPES} SELECT DISTINCT {', '.join(SHAPE_COLUMNS)} FROM {TABLE} "
                         "WHERE status = 'ok'")
    store.close()
    return seconds


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every thread of this process) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))]


COLD = 2000  # cold lookups per kind: random (device, shape) pairs, the memo emptied before each


def lookup_latency(db: Path, n: int) -> dict:
    """Warm and cold lookups of random problems, in seconds (p50, p99): wall time, and the thread's
    CPU time, which leaves out the waits for a core that a loaded shared machine adds."""
    tpl = templates.get("matmul")
    fps = devices(max(2, n // 5000))
    rng = random.Random(1)
    shapes = [(rng.choice((64, 100, 300, 1000)), rng.choice((64, 500, 5000)), rng.choice((64, 700, 9000))) for _ in range(64)]
    lookup_mod.clear_cache()
    out = {}
    exact = lambda fp: fp.key  # noqa: E731
    unseen_driver = lambda fp: Fingerprint(*fp.key.split("|")[:5], "9.9").key  # noqa: E731
    for name, asker, forget_shapes in (("exact device, shape lists cached", exact, False),
                                       ("exact device, nothing cached", exact, True),
                                       ("family fallback (unseen driver), nothing cached", unseen_driver, True)):
        cold, cpu = [], []
        reader = lookup_mod._reader(str(db))
        for i in range(COLD):
            fp, shape = rng.choice(fps), rng.choice(shapes)
            reader.memo.clear()
            if forget_shapes:
                reader.shapes.clear()
            c0, t0 = time.thread_time(), time.perf_counter()
            r = lookup_mod.lookup(tpl.name, shape, "float32", asker(fp), str(db))
            cold.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
            assert r.level != "default", r.explain
        out[f"cold lookup, {name}"] = percentiles(cold)
        out[f"cold lookup, {name}: CPU time"] = percentiles(cpu)
    warm = []
    key = fps[0].key
    lookup_mod.lookup("matmul", (64, 64, 64), "float32", key, str(db))
    for _ in range(20000):
        t0 = time.perf_counter()
        lookup_mod.lookup("matmul", (64, 64, 64), "float32", key, str(db))
        warm.append(time.perf_counter() - t0)
    out["warm lookup (memo hit + data_version)"] = percentiles(warm)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    ref = []
    for _ in range(20000):
        i = rng.randrange(1, n)
        t0 = time.perf_counter()
        conn.execute(f"SELECT config, time_median FROM {TABLE} WHERE id = ?", (i,)).fetchone()
        ref.append(time.perf_counter() - t0)
    conn.close()
    out["reference: raw point query by id"] = percentiles(ref)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None, help="working folder (default: a temporary one, removed at the end)")
    args = ap.parse_args()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="tunesvc-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    n = args.records
    try:
        db = work / "scale.db"
        for p in work.glob("*"):
            p.unlink()
        t_fill = insert(db, n)[0]
        print(f"generated {n} records in {t_fill:.1f} s ({n / t_fill:,.0f} records/s raw executemany)", file=sys.stderr)
        lat = lookup_latency(db, n)

        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        sql, qargs = _export_query(None, None, False)
        t_scan = timed(lambda: sum(1 for _ in conn.execute(f"SELECT * FROM {TABLE}")))
        t_ordered = timed(lambda: sum(1 for _ in conn.execute(sql, qargs)))
        conn.close()
        ops = {}
        for name, level in (("scale.jsonl", None), ("scale.jsonl.gz", exchange.GZIP_LEVEL), ("level6.jsonl.gz", 6)):
            saved, exchange.GZIP_LEVEL = exchange.GZIP_LEVEL, level or exchange.GZIP_LEVEL
            try:
                ops[f"export {name}" + (f" (gzip level {level})" if level else "")] = timed(lambda: export(work / name, db))
            finally:
                exchange.GZIP_LEVEL = saved
        summaries = []
        t_import = timed(lambda: summaries.append(import_files([work / "scale.jsonl.gz"], work / "imported.db")))
        assert summaries[-1].added == n and not summaries[-1].rejected, summaries[-1]
        t_again = timed(lambda: summaries.append(import_files([work / "scale.jsonl.gz"], work / "imported.db")))
        assert summaries[-1].added == 0
        ref_db = work / "reference.db"
        t_ref_import = insert(ref_db, n)

        print(f"\n## {n:,} records, matmul, {len(devices(max(2, n // 5000)))} devices\n")
        print("| lookup | p50 | p99 | p99 / reference p99 |")
        print("|---|---|---|---|")
        ref99 = lat["reference: raw point query by id"][1]
        for k, (p50, p99) in lat.items():
            print(f"| {k} | {p50 * 1e6:.1f} µs | {p99 * 1e6:.1f} µs | {p99 / ref99:.1f}x |")
        print("\n| operation | seconds | CPU seconds | records/s | vs reference |")
        print("|---|---|---|---|---|")

        def row(label, t, ref, what):
            cpu = f"{t[1]:.2f}" if t[1] is not None else "-"
            print(f"| {label} | {t[0]:.2f} | {cpu} | {n / t[0]:,.0f} | {t[0] / ref[0]:.1f}x {what} |")

        row("reference: raw SELECT of every row", t_scan, t_scan, "")
        row("raw SELECT of every row in the export's key order", t_ordered, t_scan, "the raw SELECT")
        for name, t in ops.items():
            row(name, t, t_scan, "the raw SELECT")
        row("reference: raw executemany INSERT", t_ref_import, t_ref_import, "")
        row("import scale.jsonl.gz into an empty db", t_import, t_ref_import, "the raw INSERT")
        row("import it again (all identical, skipped)", t_again, t_ref_import, "the raw INSERT")
        print("\n| file | size | bytes/record |")
        print("|---|---|---|")
        for label, path in (("database (with indexes)", db), ("scale.jsonl", work / "scale.jsonl"),
                            (f"scale.jsonl.gz (gzip level {exchange.GZIP_LEVEL})", work / "scale.jsonl.gz"),
                            ("level6.jsonl.gz (gzip level 6)", work / "level6.jsonl.gz")):
            size = os.path.getsize(path)
            print(f"| {label} | {size / 2**20:.1f} MiB | {size / n:.0f} |")
    finally:
        lookup_mod.clear_cache()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
