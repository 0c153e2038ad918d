"""The SQLite store: round trips, upserts, WAL, reuse."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tunesvc.cache import Store
from tunesvc.cache.store import TABLE
from tunesvc.errors import StoreError
from tunesvc.types import Config, Fingerprint, Measurement, Problem, Record, Timing

FP = Fingerprint("opencl", "AMD", "cpu", "znver3", "pthread-AMD EPYC", "3.0")


def rec(config, status="ok", t=1e-3, shape=(8, 8, 8), fp=FP, template_hash="h1"):
    timing = Timing(t, t * 0.9, t * 1.2, t * 0.1, 5) if status == "ok" else None
    m = Measurement(Config(config), status, "" if status == "ok" else "boom", timing, 1.0 if timing else None, 2.0 if timing else None, 0.25)
    return Record(fp, "matmul", template_hash, "float32", shape, m)


def test_round_trip_keeps_every_field(tmp_path):
    store = Store(tmp_path / "a.db")
    r = rec({"MWG": 8, "VW": 2})
    store.put(r)
    (back,) = list(store.records())
    assert back.fingerprint == FP and back.template == "matmul" and back.shape == (8, 8, 8)
    assert back.measurement.config == Config({"MWG": 8, "VW": 2})
    assert back.measurement.timing == r.measurement.timing
    assert back.measurement.gflops == 1.0 and back.measurement.compile_seconds == 0.25
    assert back.created_at and back.tunesvc_version


def test_parameters_are_named_json_not_positional(tmp_path):
    store = Store(tmp_path / "a.db")
    store.put(rec({"VW": 2, "MWG": 8}))
    raw = sqlite3.connect(tmp_path / "a.db").execute(f"SELECT config FROM {TABLE}").fetchone()[0]
    assert raw == '{"MWG":8,"VW":2}'


def test_same_problem_and_config_is_replaced_not_duplicated(tmp_path):
    store = Store(tmp_path / "a.db")
    store.put(rec({"MWG": 8}, t=2e-3))
    store.put(rec({"MWG": 8}, t=1e-3))
    store.put(rec({"MWG": 16}, status="build"))
    assert store.count() == 2
    got = store.measurements(Problem("matmul", "h1", (8, 8, 8), "float32", FP))
    assert got[Config({"MWG": 8})].time == 1e-3
    assert got[Config({"MWG": 16})].status == "build" and got[Config({"MWG": 16})].reason == "boom"


def test_measurements_are_keyed_by_shape_device_and_source_hash(tmp_path):
    store = Store(tmp_path / "a.db")
    other = Fingerprint("opencl", "AMD", "cpu", "znver3", "pthread-AMD EPYC", "4.0")
    store.put_many([rec({"MWG": 8}), rec({"MWG": 8}, shape=(9, 8, 8)), rec({"MWG": 8}, fp=other), rec({"MWG": 8}, template_hash="h2")])
    assert store.count() == 4
    assert len(store.measurements(Problem("matmul", "h1", (8, 8, 8), "float32", FP))) == 1


def test_wal_mode_and_indexes(tmp_path):
    store = Store(tmp_path / "a.db")
    assert store.db.journal_mode == "wal"
    indexes = {tuple(i.columns) for i in store.db[TABLE].indexes}
    assert ("device_key", "template", "template_hash", "dtype", "shape", "config") in indexes


def test_readonly_store_of_a_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "missing.db", readonly=True)


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    p = tmp_path / "notes.db"
    p.write_bytes(b"this is not a database" * 100)
    before = p.read_bytes()
    with pytest.raises(StoreError, match="cannot open"):
        Store(p)
    assert p.read_bytes() == before


def test_devices_are_remembered_by_id_and_fingerprint(tmp_path, cl_info):
    store = Store(tmp_path / "a.db")
    store.put_device(cl_info)
    assert store.device(cl_info.id) == cl_info
    assert store.device(cl_info.fingerprint.key) == cl_info
    assert store.device("opencl:9:9") is None


def test_a_failed_write_is_a_store_error_of_one_line(tmp_path):
    Store(tmp_path / "a.db").close()
    store = Store(tmp_path / "a.db", readonly=True)
    with pytest.raises(StoreError, match="cannot write to tuning database") as e:
        store.put_many([rec({"MWG": 8})])
    assert "\n" not in str(e.value) and "readonly" in str(e.value)
    store.close()


def _schema(path) -> dict:
    """{table: (columns as 'name TYPE[ NOT NULL][ PKn]', indexes as 'name(unique): columns')} of a file."""
    conn = sqlite3.connect(path)
    out = {}
    for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        cols = [f"{r[1]} {r[2]}" + (" NOT NULL" if r[3] else "") + (f" PK{r[5]}" if r[5] else "")
                for r in conn.execute(f"PRAGMA table_info({t})")]
        idx = sorted(f"{r[1]}({r[2]}): " + ",".join(x[2] for x in conn.execute(f'PRAGMA index_info("{r[1]}")'))
                     for r in conn.execute(f"PRAGMA index_list({t})"))
        out[t] = (cols, idx)
    conn.close()
    return out


def test_a_fresh_database_has_the_schema_every_existing_one_has(tmp_path):
    """Tables, columns and indexes as the released versions created them: existing files stay valid."""
    Store(tmp_path / "a.db").close()
    got = _schema(tmp_path / "a.db")
    text = ("device_key TEXT NOT NULL,backend TEXT,vendor TEXT,device_type TEXT,architecture TEXT,device_name TEXT,"
            "driver TEXT,template TEXT NOT NULL,template_hash TEXT NOT NULL,dtype TEXT NOT NULL,shape TEXT NOT NULL,"
            "config TEXT NOT NULL,status TEXT NOT NULL,reason TEXT,time_median REAL,time_min REAL,time_max REAL,"
            "time_iqr REAL,runs INTEGER,gflops REAL,gbps REAL,compile_seconds REAL,schema_version INTEGER,"
            "tunesvc_version TEXT,created_at TEXT,source TEXT")
    assert got == {
        "ceilings": (["device_key TEXT PK1", "gbps REAL", "gflops REAL", "details TEXT", "measured_at TEXT"],
                     ["sqlite_autoindex_ceilings_1(1): device_key"]),
        "devices": (["device_key TEXT PK1", "id TEXT", "info TEXT", "updated_at TEXT"],
                    ["idx_devices_id(0): id", "sqlite_autoindex_devices_1(1): device_key"]),
        "measurements": (["id INTEGER PK1", *text.split(",")],
                         ["idx_measurements_device_key_template_template_hash_dtype_shape_config(1): "
                          "device_key,template,template_hash,dtype,shape,config",
                          "idx_measurements_template_dtype_status_device_key(0): template,dtype,status,device_key",
                          "measurements_lookup(0): template,template_hash,dtype,status,device_key,shape,time_median"]),
        "meta": (["key TEXT PK1", "value TEXT"], ["sqlite_autoindex_meta_1(1): key"]),
        "record_devices": (["device_key TEXT PK1", "backend TEXT", "vendor TEXT", "device_type TEXT", "architecture TEXT",
                            "device_name TEXT"], ["sqlite_autoindex_record_devices_1(1): device_key"]),
        "record_shapes": (["template TEXT PK1", "template_hash TEXT PK2", "dtype TEXT PK3", "device_key TEXT PK4",
                           "shape TEXT PK5"],
                          ["sqlite_autoindex_record_shapes_1(1): template,template_hash,dtype,device_key,shape"]),
    }


TUNESVC = str(Path(sys.executable).with_name("tunesvc"))


@pytest.mark.parametrize("command", [["show"], ["export", "out.jsonl"], ["devices"], ["lookup", "matmul", "--shape", "8x8x8"]])
def test_a_text_file_as_db_exits_2_with_one_line_naming_it(tmp_path, command):
    notes = tmp_path / "notes.db"
    notes.write_text("my notes, not a tuning database\n" * 50)
    r = subprocess.run([TUNESVC, *command, "--db", str(notes)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert str(notes) in r.stderr and "not a database" in r.stderr
    assert not (tmp_path / "out.jsonl").exists() and notes.read_text() == "my notes, not a tuning database\n" * 50


# ---- a server URL where a file is expected --------------------------------------------------
SERVER = "postgresql://bob:hunter2@db.example/tune"


@pytest.mark.parametrize("url,server", [(SERVER, True), ("postgres://h/d", True), ("postgresql+psycopg://h/d", True),
                                        ("tune.db", False), ("/tmp/postgresql/x.db", False), ("sqlite:///x.db", False)])
def test_is_server_url(url, server):
    from tunesvc.settings import is_server_url

    assert is_server_url(url) is server


def test_an_unreachable_server_is_refused_not_taken_for_a_path(tmp_path, monkeypatch):
    pytest.importorskip("psycopg")
    from tunesvc.settings import ServerURL, db_path

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match=r"cannot open tuning database 'postgresql://bob:\*\*\*@db.example/tune'") as e:
        Store(SERVER)
    assert "hunter2" not in str(e.value)
    monkeypatch.setenv("TUNESVC_DB", "postgres://h/d")
    assert db_path(None) == ServerURL("postgres://h/d")
    assert not list(tmp_path.iterdir())  # no ./postgresql:/... file or folder made


@pytest.mark.parametrize("args", [["show"], ["export", "out.jsonl"], ["import", "in.jsonl"], ["lookup", "matmul", "--shape", "8x8x8"],
                                  ["jobs"], ["submit", "matmul", "--shape", "8x8x8"], ["worker", "--exit-when-idle"]])
def test_every_command_refuses_an_unreachable_server_in_one_line(tmp_path, args):
    pytest.importorskip("psycopg")
    exported = tmp_path / "in.jsonl"  # a real export (of an empty database), so import reaches --db
    Store(tmp_path / "e.db").close()
    subprocess.run([str(Path(sys.executable).with_name("tunesvc")), "export", str(exported), "--db", str(tmp_path / "e.db")],
                   check=True, capture_output=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = subprocess.run([str(Path(sys.executable).with_name("tunesvc")), *args, "--db", SERVER], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open tuning database 'postgresql://bob:***@db.example/tune'" in lines[0], r.stderr
    assert "hunter2" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
