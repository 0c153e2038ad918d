"""Demand: lookups answered below exact are counted in memory, written in the background into the
database they read, listed by ``tunesvc demand`` and ``GET /v1/demand``, queued by ``submit --from-demand``."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

import tunesvc.lookup  # noqa: F401  (the module: tunesvc.lookup the attribute is the function)
from db_helpers import CPU, GPU, file_digest, make_records
from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cache.demand import Buffer, listing
from tunesvc.cache.jobs import Queue
from tunesvc.cli import main

lookup_mod = sys.modules["tunesvc.lookup"]
lookup = lookup_mod.lookup
HERE = Path(__file__).resolve().parent
MATMUL = templates.get("matmul")


def _db(path: Path, records=()) -> Path:
    store = Store(path)
    store.put_many(list(records))
    store.close()
    return path


def _demand_rows(path: Path) -> list[tuple]:
    """The demand table as stored, read straight from the file (no buffer, no merging)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'demand'").fetchone():
            return []
        return conn.execute("SELECT template, shape, dtype, device_key, count FROM demand ORDER BY shape").fetchall()
    finally:
        conn.close()


@pytest.fixture
def buffer(monkeypatch, no_shipped_here):
    """Recording on, into a buffer of this test's that writes only when told (flush)."""
    monkeypatch.setenv("TUNESVC_DEMAND", "1")
    buf = Buffer(interval=3600)
    monkeypatch.setattr(lookup_mod, "_DEMAND", buf)
    lookup_mod.clear_cache()
    yield buf
    buf._stop.set()
    lookup_mod.clear_cache()


@pytest.fixture
def no_shipped_here(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESVC_SHIPPED_DB", str(tmp_path / "no-shipped"))
    monkeypatch.setenv("TUNESVC_DB", str(tmp_path / "default.db"))


def _cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.stdout, [ln for ln in r.stderr.splitlines() if ln.strip()]


# ---- recording ---------------------------------------------------------------------------
def test_misses_are_counted_in_memory_and_written_only_by_a_flush(tmp_path, buffer):
    db = _db(tmp_path / "t.db", make_records(CPU))
    other = _db(tmp_path / "other.db", make_records(CPU))
    for _ in range(3):
        assert lookup("matmul", (64, 64, 64), "float32", CPU.key, db).level == "exact"
        assert lookup("matmul", (100, 64, 64), "float32", CPU.key, db).level == "nearest_shape"
    assert lookup("matmul", "100x64x64", "float32", CPU.key, db).level == "nearest_shape"  # another spelling, one problem
    assert lookup("matmul", (64, 64, 64), "float32", GPU.key, db).level == "default"
    assert lookup("matmul", (32, 32, 32), "float32", CPU.key, other).level == "nearest_shape"
    assert buffer.pending() == 3  # the exact answers counted nothing
    assert _demand_rows(db) == [] and _demand_rows(other) == []  # nothing written inside a lookup
    assert buffer.flush() == 3 and buffer.pending() == 0
    assert _demand_rows(db) == [("matmul", "100x64x64", "float32", CPU.key, 4), ("matmul", "64x64x64", "float32", GPU.key, 1)]
    assert _demand_rows(other) == [("matmul", "32x32x32", "float32", CPU.key, 1)]  # the database the lookup read
    (first, last), = sqlite3.connect(db).execute("SELECT first_seen, last_seen FROM demand WHERE shape = '100x64x64'")
    assert first.endswith("+00:00") and first <= last
    assert not (tmp_path / "default.db").exists()
    lookup("matmul", (100, 64, 64), "float32", CPU.key, db)  # warm again after the write changed the file
    buffer.flush()
    assert _demand_rows(db)[0][-1] == 5


def test_the_setting_turns_recording_off(tmp_path, buffer, monkeypatch):
    db = _db(tmp_path / "t.db", make_records(CPU))
    monkeypatch.setenv("TUNESVC_DEMAND", "0")
    lookup_mod.clear_cache()
    for _ in range(3):
        assert lookup("matmul", (100, 64, 64), "float32", CPU.key, db).level == "nearest_shape"
    assert buffer.pending() == 0 and buffer.flush() == 0 and _demand_rows(db) == []
    monkeypatch.setenv("TUNESVC_DEMAND", "1")
    lookup_mod.clear_cache()  # read at the next cold lookup
    lookup("matmul", (100, 64, 64), "float32", CPU.key, db)
    assert buffer.pending() == 1


def test_no_database_is_made_for_demand(tmp_path, buffer):
    missing = tmp_path / "sub" / "missing.db"
    assert lookup("matmul", (64, 64, 64), "float32", CPU.key, missing).level == "default"
    assert buffer.pending() == 0  # nothing read, nothing to count into
    db = _db(tmp_path / "gone.db", make_records(CPU))
    lookup("matmul", (100, 64, 64), "float32", CPU.key, db)
    for p in tmp_path.glob("gone.db*"):
        p.unlink()
    assert buffer.flush() == 0
    assert not missing.parent.exists() and not list(tmp_path.glob("gone.db*"))


def test_a_database_that_refuses_writes_still_answers(tmp_path, buffer):
    db = _db(tmp_path / "frozen.db", make_records(CPU))
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        before = file_digest(db)
        for _ in range(3):
            assert lookup("matmul", (100, 64, 64), "float32", CPU.key, db).level == "nearest_shape"
        assert buffer.flush() == 0 and str(db) in buffer.refused  # said at debug, not raised
        assert lookup("matmul", (100, 64, 64), "float32", CPU.key, db).level == "nearest_shape"
        assert buffer.flush() == 0 and file_digest(db) == before
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)


def test_a_lookup_answers_while_another_writer_holds_the_file_and_the_flush_waits_for_it(tmp_path, buffer):
    import threading

    db = _db(tmp_path / "t.db", make_records(CPU))
    lookup("matmul", (100, 64, 64), "float32", CPU.key, db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write in progress
    try:
        assert lookup("matmul", (100, 64, 64), "float32", CPU.key, db).level == "nearest_shape"  # never waits
        flushed: list = []
        writer = threading.Thread(target=lambda: flushed.append(buffer.flush()))
        writer.start()
        time.sleep(0.3)
        assert not flushed  # the write waits for the lock, the lookups do not
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    writer.join(30)
    assert flushed == [1] and _demand_rows(db) == [("matmul", "100x64x64", "float32", CPU.key, 2)]


def test_a_database_that_cannot_be_read_counts_nothing(tmp_path, buffer):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 100)
    assert lookup("matmul", (100, 64, 64), "float32", CPU.key, bad).level == "default"
    assert buffer.pending() == 0 and buffer.flush() == 0
    assert bad.read_bytes() == b"not a database at all" * 100


CHILD = """
import os, sys
sys.path.insert(0, {tests!r})
import tunesvc.lookup
from db_helpers import CPU
lookup = sys.modules["tunesvc.lookup"].lookup
for _ in range(3):
    lookup("matmul", (100, 64, 64), "float32", CPU.key, {db!r})
pid = os.fork()
if pid == 0:  # the child counts its own asks (a warm one too) and writes only those at its exit
    lookup("matmul", (50, 64, 64), "float32", CPU.key, {db!r})
    lookup("matmul", (100, 64, 64), "float32", CPU.key, {db!r})
    sys.exit(0)
os.waitpid(pid, 0)
"""


def test_counts_are_written_at_exit_and_a_forked_child_does_not_write_its_parents(tmp_path, no_shipped_here):
    db = _db(tmp_path / "t.db", make_records(CPU))
    env = {**os.environ, "TUNESVC_DEMAND": "1"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD.format(tests=str(HERE), db=str(db)))],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert _demand_rows(db) == [("matmul", "100x64x64", "float32", CPU.key, 4), ("matmul", "50x64x64", "float32", CPU.key, 1)]


# ---- listing -----------------------------------------------------------------------------
def _asks(db: Path, *rows) -> None:
    """Demand rows as a flush writes them: (shape, count[, template hash, device key])."""
    counts = {}
    for row in rows:
        shape, n, template_hash, device_key = row if len(row) == 4 else (*row, MATMUL.source_hash, CPU.key)
        counts[("matmul", template_hash, "float32", shape, device_key)] = (n, "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00")
    queue = Queue.open(db)
    try:
        queue.add_demand(counts)
    finally:
        queue.close()


def test_the_listing_is_what_was_asked_and_never_tuned_most_asked_first(tmp_path, no_shipped_here):
    db = _db(tmp_path / "t.db", make_records(CPU, shapes=((64, 64, 64),)))
    _asks(db, ("64x64x64", 9), ("128x64x64", 2), ("256x64x64", 5), ("256x64x64", 3, "0123abcd", CPU.key),
          ("128x64x64", 4, MATMUL.source_hash, GPU.key))
    got = [(d.shape, d.device_key, d.count) for d in listing(db)]
    # 64x64x64 is tuned on CPU; the asks of an older matmul count for the current one
    assert got == [("256x64x64", CPU.key, 8), ("128x64x64", GPU.key, 4), ("128x64x64", CPU.key, 2)]
    assert [d.shape for d in listing(db, limit=1)] == ["256x64x64"]
    everything = listing(db, include_tuned=True)
    assert [(d.shape, d.tuned) for d in everything][0] == ("64x64x64", True) and len(everything) == 4
    assert all(d.template_hash == MATMUL.source_hash for d in everything)
    _db(db, make_records(CPU, shapes=((256, 64, 64),)))  # tuned since
    assert [d.shape for d in listing(db)] == ["128x64x64", "128x64x64"]


def test_listing_a_database_that_is_not_there_makes_none(tmp_path, no_shipped_here):
    assert listing(tmp_path / "missing.db") == [] and not (tmp_path / "missing.db").exists()
    code, out, errors = _cli("demand", "--db", tmp_path / "missing.db")
    assert code == 0 and "no demand" in out and not errors and not (tmp_path / "missing.db").exists()


# ---- the command line ----------------------------------------------------------------------
def test_demand_and_submit_from_demand_on_the_command_line(tmp_path, no_shipped_here):
    db = _db(tmp_path / "t.db", make_records(CPU, shapes=((64, 64, 64),)))
    _asks(db, ("128x64x64", 7), ("256x64x64", 3), ("512x64x64", 1))
    code, out, errors = _cli("demand", "--db", db)
    assert code == 0 and not errors
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["asked", "template", "shape", "dtype", "device"]
    assert [ln.split()[:3] for ln in lines[2:]] == [["7", "matmul", "128x64x64"], ["3", "matmul", "256x64x64"],
                                                     ["1", "matmul", "512x64x64"]]
    code, out, errors = _cli("submit", "--from-demand", "--top", 2, "--trials", 5, "--db", db)
    assert code == 0 and not errors and out.count("queued") == 2
    jobs = Queue.open(db).jobs()
    assert [(j.shape, j.device_family, j.trials) for j in jobs] == [("128x64x64", CPU.key, 5), ("256x64x64", CPU.key, 5)]
    code, out, _ = _cli("submit", "--from-demand", "--top", 2, "--db", db)  # queued already: the same jobs
    assert code == 0 and len(Queue.open(db).jobs()) == 2
    code, out, _ = _cli("submit", "--from-demand", "--top", 5, "--device-family", "cpu", "--db", db)
    assert code == 0 and Queue.open(db).jobs()[-1].device_family == "cpu" and len(Queue.open(db).jobs()) == 5


@pytest.mark.parametrize("args, says", [
    (["submit", "--from-demand", "--top", "0"], "--top must be at least 1"),
    (["submit", "--from-demand", "--shape", "64x64x64"], "--shape comes from the demand"),
    (["submit", "matmul", "--from-demand"], "TEMPLATE comes from the demand"),
    (["submit", "--from-demand", "--dtype", "float16"], "--dtype comes from the demand"),
    (["submit", "--from-demand", "--trials", "0"], "--trials must be at least 1"),
    (["submit", "matmul", "--top", "3"], "--top needs --from-demand"),
    (["submit"], "missing argument TEMPLATE"),
    (["demand", "--limit", "0"], "--limit must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2_and_queues_nothing(tmp_path, no_shipped_here, args, says):
    db = _db(tmp_path / "t.db")
    _asks(db, ("128x64x64", 7))
    code, _, errors = _cli(*args, "--db", db)
    assert code == 2 and len(errors) == 1 and errors[0].startswith("Error: ") and says in errors[0], errors
    assert Queue.open(db).jobs() == []


def test_a_problem_whose_template_is_gone_is_skipped(tmp_path, no_shipped_here):
    db = _db(tmp_path / "t.db")
    queue = Queue.open(db)
    queue.add_demand({("no_such_template", "ffff", "float32", "64", CPU.key): (9, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00")})
    queue.close()
    _asks(db, ("128x64x64", 2))
    code, out, errors = _cli("submit", "--from-demand", "--db", db)
    assert code == 0 and "job 1 queued: matmul 128x64x64" in out
    assert len(errors) == 1 and errors[0].startswith("skipped no_such_template 64 float32: unknown template"), errors


# ---- over HTTP -----------------------------------------------------------------------------
def test_the_service_lists_demand_and_records_its_own(tmp_path, no_shipped_here):
    pytest.importorskip("uvicorn", reason="pip install 'tunesvc[service]'")
    from test_service import TUNESVC, free_port, get

    db = _db(tmp_path / "t.db", make_records(CPU, shapes=((64, 64, 64),)))
    _asks(db, ("128x64x64", 7), ("256x64x64", 3))
    port = free_port()
    env = {**os.environ, "TUNESVC_DEMAND": "1"}
    proc = subprocess.Popen([TUNESVC, "serve", "--db", str(db), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                if get(base + "/v1/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        status, body = get(f"{base}/v1/demand")
        assert status == 200 and body["schema_version"] == 1
        assert [(d["shape"], d["count"], d["device_name"]) for d in body["demand"]] == [
            ("128x64x64", 7, CPU.name), ("256x64x64", 3, CPU.name)]
        assert get(f"{base}/v1/demand?limit=1")[1]["demand"] == body["demand"][:1]
        assert get(f"{base}/v1/demand?limit=0")[0] == 400
        for _ in range(3):
            assert get(f"{base}/v1/lookup?template=matmul&shape=32x64x64&device={quote(CPU.key)}")[1]["level"] == "nearest_shape"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    # the server's own asks, written when it stopped (uvicorn ends by raising SIGTERM again: no atexit)
    assert [(d.shape, d.count) for d in listing(db)] == [("128x64x64", 7), ("32x64x64", 3), ("256x64x64", 3)]


# ---- on a PostgreSQL server ------------------------------------------------------------------
def test_demand_on_a_postgresql_server(postgres_url, buffer):
    _db(postgres_url, make_records(CPU, shapes=((64, 64, 64),)))
    for _ in range(3):
        assert lookup("matmul", (100, 64, 64), "float32", CPU.key, postgres_url).level == "nearest_shape"
    assert lookup("matmul", (64, 64, 64), "float32", CPU.key, postgres_url).level == "exact"
    assert buffer.flush() == 1
    lookup("matmul", (100, 64, 64), "float32", CPU.key, postgres_url)
    assert buffer.flush() == 1  # added to the row the first write made
    assert [(d.shape, d.count, d.tuned) for d in listing(postgres_url, include_tuned=True)] == [("100x64x64", 4, False)]
    code, out, errors = _cli("submit", "--from-demand", "--db", postgres_url)
    assert code == 0 and not errors and "matmul 100x64x64 float32" in out


def test_a_server_that_is_gone_still_answers_and_keeps_the_counts(tmp_path, buffer, free_port_url):
    assert lookup("matmul", (100, 64, 64), "float32", CPU.key, free_port_url).level == "default"
    assert buffer.pending() == 0  # nothing read: nothing counted
    buffer.add((free_port_url, "matmul", MATMUL.source_hash, "float32", "100x64x64", CPU.key))
    assert buffer.flush() == 0 and buffer.pending() == 1  # kept for the next flush


@pytest.fixture
def free_port_url():
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install 'tunesvc[postgres]'")
    from test_service import free_port

    return f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none"
