"""Several real ``tunesvc tune`` processes writing one database at once, and lookups beside them.

No record may be lost, no process may fail with "database is locked", and a lookup
never waits for a writer (WAL: readers see the last commit, whatever a writer holds).
"""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
# A quick, all-healthy template: this tests the store under concurrent writers, not a kernel.
HEALTHY = str(Path(__file__).parent / "fault_templates" / "healthy.py")
# Two processes share one problem (and its Optuna study); two tune other shapes.
SHAPES = ["4096", "4096", "2048", "1000"]
TRIALS = 3


def canonical(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def test_four_tuners_one_database(tmp_path, cl_info):
    lookup = importlib.import_module("tunesvc.lookup")  # the module (tunesvc.lookup may name the function)
    from tunesvc import templates

    templates.load_file(HEALTHY)
    db = tmp_path / "shared.db"
    procs = [
        subprocess.Popen([TUNESVC, "tune", HEALTHY, "--shape", shape, "--seed", str(i), "--trials", str(TRIALS),
                          "--db", str(db), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, shape in enumerate(SHAPES)
    ]
    stop, errors, latencies = threading.Event(), [], []

    def look():
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                lookup.lookup("healthy", (4096,), "float32", cl_info, db)
            except Exception as e:  # any failure of a lookup beside the writers is the bug under test
                errors.append(repr(e))
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.01)

    reader = threading.Thread(target=look)
    reader.start()
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        stop.set()
        reader.join()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "locked" not in err
    results = [json.loads(out) for out, _ in outs]
    assert all(r["trials"] == TRIALS for r in results)

    # Every measurement of every process is in the database: none lost.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    stored = set(conn.execute("SELECT shape, config FROM measurements"))
    conn.close()
    claimed = {(r["shape"], canonical(c)) for r in results for c in r["new_configs"]}
    assert stored == claimed
    assert not errors, errors[:3]
    assert latencies, "no lookup ran while the tuners wrote"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, cl_info):
    """A database with a short real tuning run in it, shared by the tests below (which restore it)."""
    from tunesvc.tuning.tuner import tune

    db = tmp_path_factory.mktemp("tuned") / "t.db"
    return db, tune("matmul", (8, 8, 8), device=cl_info, db=db, strategy="random", seed=0, trials=2, isolate=False)


def test_a_lookup_does_not_wait_for_an_open_write_transaction(tuned, cl_info):
    lookup = importlib.import_module("tunesvc.lookup")  # the module (tunesvc.lookup may name the function)

    db, r = tuned
    best = dict(r.best.config)
    writer = sqlite3.connect(db, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # hold the write lock, as a tuner storing a record does
    writer.execute("UPDATE measurements SET time_median = time_median * 1000")
    try:
        lookup.clear_cache()
        t0 = time.perf_counter()
        res = lookup.lookup("matmul", (8, 8, 8), "float32", cl_info, db)
        waited = time.perf_counter() - t0
    finally:
        writer.rollback()
        writer.close()
    assert res.level == "exact" and dict(res.config) == best  # the last committed state
    # A reader that had to wait would wait for the writer (forever here); a second is generous.
    assert waited < 1.0


def test_a_write_waits_for_another_writer_instead_of_failing(tuned):
    from tunesvc.cache import Store

    db, r = tuned
    store = Store(db)
    record = next(store.records())
    other = sqlite3.connect(db, timeout=0, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.5, other.commit)
    release.start()
    try:
        store.put(record)  # blocked for 1.5 s by the other writer, then succeeds
    finally:
        release.join()
        other.close()
    assert store.count() == len(r.measured)


def _lines_of(records) -> list[dict]:
    """Export lines (dicts) of records, as an export of them would hold."""
    from tunesvc.cache.schema import EXPORT_FIELDS, record_to_row

    return [{k: (json.loads(v) if k == "config" else v) for k, v in record_to_row(r).items() if k in EXPORT_FIELDS}
            for r in records]


def test_a_large_import_lets_another_writer_in_within_a_second(tmp_path):
    """The import merges in short transactions: a tuner storing measurements meanwhile waits a
    fraction of a second at a time (it died after 21 s with 'database is locked' before)."""
    from dataclasses import replace

    from db_helpers import CPU, GPU, make_records

    from tunesvc.cache import Store
    from tunesvc.cache.exchange import FORMAT, import_files

    one_device = _lines_of(make_records(GPU, shapes=[(64 * (i + 1), 64, 64) for i in range(8)], n=125))
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"format": FORMAT, "format_version": 1, "tunesvc_version": "0.1.0",
                            "created_at": "2025-01-01T00:00:00+00:00"}) + "\n")
        for d in range(20):  # 20,000 records: 20 drivers of one GPU
            for line in one_device:
                f.write(json.dumps({**line, "driver": f"d{d}"}) + "\n")
    db = tmp_path / "t.db"
    Store(db).close()
    waits, stop, errors = [], threading.Event(), []

    def tuner():
        store = Store(db)
        record = make_records(CPU, n=1)[0]
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                store.put(replace(record, created_at=str(t0)))
            except Exception as e:  # the failure under test
                errors.append(repr(e))
            waits.append(time.perf_counter() - t0)
            time.sleep(0.005)
        store.close()

    thread = threading.Thread(target=tuner)
    thread.start()
    try:
        summary = import_files([path], db)
    finally:
        stop.set()
        thread.join()
    assert summary.added == 20_000 and not errors, errors[:3]
    assert len(waits) > 5 and max(waits) < 1.5, sorted(waits)[-5:]
    assert Store(db).count() == 20_001


@pytest.mark.parametrize("write", ["put_device", "put_ceilings"])
def test_device_and_ceiling_writes_wait_for_another_writer(tmp_path, write):
    from db_helpers import CPU

    from tunesvc.cache import Store
    from tunesvc.types import DeviceInfo

    db = tmp_path / "t.db"
    store = Store(db)
    store.db.conn.execute("PRAGMA busy_timeout = 100")  # give up waiting soon: the store's retries must carry it
    other = sqlite3.connect(db, timeout=0, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.5, other.commit)
    release.start()
    try:
        if write == "put_device":
            info = DeviceInfo("opencl:0:0", CPU, "PoCL", "OpenCL 3.0", "1.2", 2, 4096, (4096, 4096, 4096), 65536,
                              "global", 8, False, True, 1 << 30, 1 << 28)
            store.put_device(info)
            assert store.device("opencl:0:0") == info
        else:
            store.put_ceilings(CPU.key, 10.0, 50.0, "2025-01-01T00:00:00+00:00", {})
            assert store.ceilings(CPU.key)["gflops"] == 50.0
    finally:
        release.join()
        other.close()
        store.close()
