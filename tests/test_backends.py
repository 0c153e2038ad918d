"""One contract, every engine: the store, the lookup, export and import, concurrent writers, the job
queue's claim and migrations, run against an SQLite file and against a real PostgreSQL server (the
session's, tests/pg_helpers.py), as Optuna runs its storage tests against every storage."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from db_helpers import CPU, make_records

from tunesvc.cache import Store
from tunesvc.cache.exchange import export, import_files
from tunesvc.cache.jobs import Queue
from tunesvc.errors import StoreError
from tunesvc.lookup import clear_cache, lookup as find
from tunesvc.types import Fingerprint, Problem

TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
#: the same hardware under another driver (family) and another device of the vendor (vendor)
OTHER_DRIVER = Fingerprint(CPU.backend, CPU.vendor, CPU.device_type, CPU.architecture, CPU.name, "9.9")
SAME_VENDOR = Fingerprint("opencl", "AMD", "cpu", "zen2", "pthread-AMD Ryzen", "3.0")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh, empty tuning database of each engine: a file path, or a PostgreSQL URL."""
    clear_cache()
    yield str(tmp_path / "t.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    clear_cache()


def cli(*args, timeout=120, **kw):
    return subprocess.run([TUNESVC, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)


def problem_of(record) -> Problem:
    return Problem(record.template, record.template_hash, record.shape, record.dtype, record.fingerprint)


def test_put_get_history_and_records(store_url, cl_info):
    records = make_records(n=4)
    store = Store(store_url)
    try:
        assert store.put_many(records) == len(records) and store.count() == len(records)
        first = records[0]
        history = store.history(problem_of(first))
        assert [r.config for r in history] == [r.config for r in records[:4]]
        assert history[0] == first  # every field back as it went in
        faster = make_records(n=1, base=1e-6)[0]
        store.put(faster)  # the same key: replaced, and it keeps its place in the history
        assert store.count() == len(records)
        assert store.measurements(problem_of(first))[first.config].time == pytest.approx(1e-6)
        assert [r.config for r in store.history(problem_of(first))][0] == first.config
        assert {r.shape for r in store.records("matmul", "epyc", "ok")} == {(64, 64, 64), (256, 256, 256)}
        assert list(store.records("reduce_sum")) == [] and list(store.records(device="a100")) == []
        store.put_device(cl_info)
        assert store.device(cl_info.id) == cl_info and store.device(cl_info.fingerprint.key) == cl_info
        store.put_ceilings(CPU.key, 12.5, 100.0, "2025-01-01T00:00:00+00:00", {"peak_gflops": 200.0})
        assert store.ceilings(CPU.key) == {"gbps": 12.5, "gflops": 100.0, "measured_at": "2025-01-01T00:00:00+00:00",
                                           "details": {"peak_gflops": 200.0}}
    finally:
        store.close()
    readonly = Store(store_url, readonly=True)
    assert readonly.count() == len(records)
    readonly.close()


def test_lookup_levels_and_fresh_answers(store_url):
    store = Store(store_url)
    store.put_many(make_records(n=3))
    store.put_many(make_records(fp=OTHER_DRIVER, shapes=((128, 128, 128),), n=2))
    store.put_many(make_records(fp=SAME_VENDOR, shapes=((512, 512, 512),), n=2))
    try:
        assert find("matmul", (64, 64, 64), device=CPU, db=store_url).level == "exact"
        near = find("matmul", (70, 64, 60), device=CPU, db=store_url)
        assert near.level == "nearest_shape" and near.tuned_shape == (64, 64, 64)
        newer = Fingerprint(*CPU.key.split("|")[:5], "4.0")
        assert find("matmul", (128, 128, 128), device=newer, db=store_url).level == "family"
        other = Fingerprint("opencl", "AMD", "cpu", "zen4", "pthread-AMD Threadripper", "3.0")
        assert find("matmul", (512, 512, 512), device=other, db=store_url).level == "vendor"
        assert find("reduce_sum", (4, 256), device=CPU, db=store_url).level == "default"
        # another writer's commit is seen by the next lookup (the data version moved)
        before = find("matmul", (300, 300, 300), device=CPU, db=store_url)
        store.put_many(make_records(shapes=((300, 300, 300),), n=2))
        after = find("matmul", (300, 300, 300), device=CPU, db=store_url)
        assert before.level == "nearest_shape" and after.level == "exact"
    finally:
        store.close()


def test_export_import_round_trip_is_byte_identical_across_engines(store_url, tmp_path):
    records = make_records(n=5) + make_records(fp=SAME_VENDOR, n=3)
    store = Store(store_url)
    store.put_many(records)
    store.close()
    ours, reference_db = tmp_path / "ours.jsonl", tmp_path / "reference.db"
    export(ours, db=store_url)
    reference = Store(reference_db)
    reference.put_many(records)
    reference.close()
    export(tmp_path / "reference.jsonl", db=reference_db)
    assert ours.read_bytes() == (tmp_path / "reference.jsonl").read_bytes()  # the same file from either engine
    best = tmp_path / "best.jsonl"
    export(best, db=store_url, best_only=True)
    assert len(best.read_text().splitlines()) == 1 + 4  # a header, the fastest of each of four problems

    other = Store(reference_db)
    faster = [r for r in make_records(n=5, base=1e-7, source="peer")]
    other.put_many(faster)
    other.close()
    export(tmp_path / "peer.jsonl", db=reference_db, template="matmul", device="epyc")
    summary = import_files([tmp_path / "peer.jsonl"], db=store_url, source="peer")
    # keep-fastest: the stored records are local, kept; the other vendor's records are identical
    assert summary.added == 0 and summary.replaced == 0 and sum(summary.skipped.values()) == 10
    summary = import_files([tmp_path / "peer.jsonl"], db=store_url, source="peer", policy="prefer-incoming")
    assert summary.replaced == 10
    store = Store(store_url, readonly=True)
    assert min(r.measurement.time for r in store.records("matmul", CPU.key)) == pytest.approx(1e-7)
    store.close()


def test_tune_show_lookup_export_on_the_command_line(store_url, tmp_path, cl_info):
    tuned = cli("tune", "reduce_sum", "--shape", "4x256", "--trials", "2", "--device", cl_info.id, "--db", store_url,
                "--json", timeout=300)
    assert tuned.returncode == 0, tuned.stderr
    if "://" in store_url:  # the search's Optuna study is kept in the same server database
        assert json.loads(tuned.stdout)["storage"].startswith("postgresql+psycopg://")
    shown = cli("show", "--db", store_url, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["records"], shown.stderr
    found = cli("lookup", "reduce_sum", "--shape", "4x256", "--device", cl_info.id, "--db", store_url, "--json")
    assert found.returncode == 0 and json.loads(found.stdout)["level"] == "exact", found.stderr
    out = tmp_path / "out.jsonl"
    assert cli("export", out, "--db", store_url).returncode == 0
    assert len(out.read_text().splitlines()) == 1 + len(json.loads(shown.stdout)["records"])


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from db_helpers import make_records
    from tunesvc.cache import Store
    from tunesvc.types import Fingerprint

    fp = Fingerprint("opencl", "AMD", "cpu", "znver3", "writer " + sys.argv[1], "3.0")
    store = Store(sys.argv[2])
    records = make_records(fp=fp, shapes=[(64, 64, 64 * k) for k in range(1, 13)], n=5)
    for i in range(0, len(records), 3):  # many short transactions, interleaved with the other writer's
        store.put_many(records[i:i + 3])
    store.close()
""")


def test_two_writer_processes_lose_nothing(store_url):
    Store(store_url).close()
    code = _WRITER.format(tests=str(Path(__file__).parent))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i), store_url], stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    store = Store(store_url, readonly=True)
    assert store.count() == 2 * 12 * 5
    assert len({r.fingerprint.name for r in store.records()}) == 2
    store.close()


_CLAIMER = textwrap.dedent("""
    import json, os, sys, time
    from tunesvc.cache.jobs import Queue

    queue, taken = Queue.open(sys.argv[2]), []
    while not os.path.exists(sys.argv[3]):  # both start claiming at once
        time.sleep(0.01)
    while (job := queue.claim("worker" + sys.argv[1], "cpu-key", ("cpu",), 600)) is not None:
        taken.append(job.id)
        queue.finish(job.id, "worker" + sys.argv[1], "done")
    queue.close()
    print(json.dumps(taken))
""")


def test_two_workers_never_claim_one_job_twice(store_url, tmp_path):
    queue = Queue.open(store_url)
    ids = [queue.submit("reduce_sum", f"4x{256 * (i + 1)}", "float32", trials=1) for i in range(40)]
    gpu_only = queue.submit("reduce_sum", "8x256", "float32", device_family="a100")
    queue.close()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIMER, str(i), store_url, go], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    taken = [json.loads(out) for out, _ in outs]
    assert sorted(taken[0] + taken[1]) == ids  # every job once, none twice
    queue = Queue.open(store_url)
    states = {j.id: (j.state, j.attempts) for j in queue.jobs()}
    queue.close()
    assert states.pop(gpu_only) == ("pending", 0) and set(states.values()) == {("done", 1)}


def _old_schema(store_url):
    """A database as an older tunesvc left it: no source or compile_seconds column, none of the
    tables added since (record_devices, record_shapes, ceilings, the queue's), one record."""
    from tunesvc.cache.schema import COLUMNS, KEY, PG_TYPES

    old = [c for c in COLUMNS if c not in ("id", "source", "compile_seconds")]
    record = make_records(n=1)[0]
    from tunesvc.cache.schema import record_to_row

    row = record_to_row(record)
    if store_url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            cols = ", ".join(f"{c} {PG_TYPES[COLUMNS[c]]}" for c in old)
            conn.execute(f"CREATE TABLE measurements (id BIGSERIAL PRIMARY KEY, {cols})")
            conn.execute("CREATE TABLE devices (device_key TEXT PRIMARY KEY, id TEXT, info TEXT, updated_at TEXT)")
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
            conn.execute(f"INSERT INTO measurements ({', '.join(old)}) VALUES ({', '.join(['%s'] * len(old))})",
                         [row[c] for c in old])
    else:
        import sqlite3

        conn = sqlite3.connect(store_url)
        with conn:
            conn.execute(f"CREATE TABLE measurements (id INTEGER PRIMARY KEY, {', '.join(old)})")
            conn.execute(f"CREATE UNIQUE INDEX measurements_key ON measurements ({', '.join(KEY)})")  # as sqlite-utils made it
            conn.execute("CREATE TABLE devices (device_key TEXT PRIMARY KEY, id TEXT, info TEXT, updated_at TEXT)")
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
            conn.execute(f"INSERT INTO measurements ({', '.join(old)}) VALUES ({', '.join('?' * len(old))})",
                         [row[c] for c in old])
        conn.close()
    return record


def test_an_older_schema_is_migrated_keeping_its_rows(store_url):
    record = _old_schema(store_url)
    assert find("matmul", (64, 64, 64), device=CPU, db=store_url).level == "exact"  # read as it is
    clear_cache()
    store = Store(store_url)  # a writer migrates it
    try:
        assert {"record_devices", "record_shapes", "ceilings"} <= store.table_names()
        [back] = store.records()
        assert back.config == record.config and back.source is None
        store.put_many(make_records(n=2))
        assert store.count() == 4  # the old record replaced by its new measurement, three more
    finally:
        store.close()
    assert find("matmul", (64, 64, 64), device=CPU, db=store_url).level == "exact"


def test_a_newer_schema_is_refused_in_one_line_and_left_alone(store_url):
    store = Store(store_url)
    store.put_many(make_records(n=1))
    store.read("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    if store.conn.in_transaction:
        store.conn.commit()
    store.close()
    for args in (["jobs"], ["submit", "reduce_sum", "--shape", "4x256"]):
        r = cli(*args, "--db", store_url)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "schema version 99" in r.stderr and "upgrade tunesvc" in r.stderr and "Traceback" not in r.stderr
    store = Store(store_url, readonly=True)
    assert store.count() == 2  # its records, nothing else written
    store.close()


# ---- PostgreSQL only: the server refuses -----------------------------------------------------
@pytest.fixture(scope="module")
def password_role(postgres_server):
    """A role that must give its password (scram), on the session's server that trusts the rest."""
    import psycopg

    url = postgres_server.url("postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE ROLE tunesvc_pw LOGIN PASSWORD 'right'")
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        hba.write_text("host all tunesvc_pw 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    return postgres_server


def test_a_bad_server_url_is_one_line_exit_2_and_no_password(password_role, tmp_path):
    port = password_role.port
    bad = {f"postgresql://tunesvc_pw:wrong-secret@127.0.0.1:{port}/postgres": "password authentication failed",
           f"postgresql://postgres:s3cret@127.0.0.1:{port}/no_such_db": 'database "no_such_db" does not exist',
           "postgresql://postgres:s3cret@127.0.0.1:1/tune": "refused"}
    for url, says in bad.items():
        for args in (["show"], ["export", tmp_path / "out.jsonl"], ["jobs"], ["lookup", "matmul", "--shape", "8x8x8"]):
            r = cli(*args, "--db", url, cwd=tmp_path)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 2 and len(lines) == 1 and says in lines[0], (args, r.stderr)
            assert "secret" not in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())


def test_without_the_driver_the_message_says_what_to_install(postgres_url):
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from tunesvc.cache import Store\n"
            "from tunesvc.errors import MissingDependencyError\n"
            "try:\n    Store(sys.argv[1])\nexcept MissingDependencyError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, postgres_url], capture_output=True, text=True, timeout=60)
    assert "pip install 'tunesvc[postgres]'" in out.stdout, out.stderr


def test_a_database_of_other_tables_is_refused(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id INT)")
    with pytest.raises(StoreError, match="not a tuning database"):
        Store(postgres_url)


def test_a_database_not_in_utf8_is_refused(postgres_server):
    import psycopg

    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE tunesvc_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    url = postgres_server.url("tunesvc_latin1")
    r = cli("jobs", "--db", url)
    assert r.returncode == 2 and "encoding LATIN1" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    with psycopg.connect(url, autocommit=True) as conn:  # nothing was made
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()[0] == 0
