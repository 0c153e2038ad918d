"""The SQLite store: round trips, upserts, WAL, reuse."""

from __future__ import annotations

import sqlite3

import pytest

from tunesvc.cache import Store
from tunesvc.cache.store import TABLE
from tunesvc.errors import StoreError
from tunesvc.types import Config, Fingerprint, Measurement, Record, Timing

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
    got = store.measurements(FP.key, "matmul", "h1", "float32", (8, 8, 8))
    assert got[Config({"MWG": 8})].time == 1e-3
    assert got[Config({"MWG": 16})].status == "build" and got[Config({"MWG": 16})].reason == "boom"


def test_measurements_are_keyed_by_shape_device_and_source_hash(tmp_path):
    store = Store(tmp_path / "a.db")
    other = Fingerprint("opencl", "AMD", "cpu", "znver3", "pthread-AMD EPYC", "4.0")
    store.put_many([rec({"MWG": 8}), rec({"MWG": 8}, shape=(9, 8, 8)), rec({"MWG": 8}, fp=other), rec({"MWG": 8}, template_hash="h2")])
    assert store.count() == 4
    assert len(store.measurements(FP.key, "matmul", "h1", "float32", (8, 8, 8))) == 1


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
