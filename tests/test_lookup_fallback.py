"""Lookup with fallback: exact device -> family -> vendor -> shipped tuning_db/ -> template default."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace

import pytest
from click.testing import CliRunner
from db_helpers import CPU, GPU, file_digest, make_records, valid_configs

import tunesvc.lookup  # noqa: F401  (the module: tunesvc.lookup the attribute is the function)
from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cache.exchange import export
from tunesvc.cli import main
from tunesvc.cache import reader as reader_mod
from tunesvc.identity import normalise_name
from tunesvc.lookup import lookup
from tunesvc.types import Measurement, Record, Timing

lookup_mod = sys.modules["tunesvc.lookup"]

SHAPE = (100, 100, 100)


@pytest.fixture
def no_shipped(tmp_path, monkeypatch):
    """An empty tuning_db/, so the repository's shipped files do not answer."""
    folder = tmp_path / "empty_tuning_db"
    folder.mkdir()
    monkeypatch.setattr(lookup_mod, "shipped_db_dir", lambda: folder)
    lookup_mod.clear_cache()
    yield folder
    lookup_mod.clear_cache()


def _db(path, records):
    store = Store(path)
    store.put_many(records)
    store.close()
    return path


@pytest.mark.parametrize("name, want", [
    ("NVIDIA A100-SXM4-80GB", "a100"),
    ("A100 PCIe 40GB", "a100"),
    ("NVIDIA GeForce RTX 3090", "geforce rtx 3090"),
    ("GeForce  RTX_3090", "geforce rtx 3090"),
    ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "core i7 8700"),
    ("pthread-AMD EPYC 7B13 64-Core Processor", "epyc 7b13"),
    ("AMD Radeon RX 7900 XTX", "radeon rx 7900 xtx"),
])  # fmt: skip
def test_device_names_are_normalised(name, want):
    assert normalise_name(name) == want


def test_exact_then_nearest_shape(tmp_path, no_shipped):
    db = _db(tmp_path / "t.db", make_records(CPU))
    exact = lookup("matmul", (64, 64, 64), "float32", CPU.key, db)
    assert exact.level == "exact" and exact.config == valid_configs((64, 64, 64), 1)[0]
    near = lookup("matmul", (300, 200, 250), "float32", CPU.key, db)
    assert near.level == "nearest_shape" and near.tuned_shape == (256, 256, 256)


@pytest.mark.parametrize("asker, level", [
    (replace(CPU, driver="9.9"), "family"),  # same hardware, new driver
    (replace(CPU, name="something else", driver="x"), "family"),  # same architecture
    (replace(CPU, architecture="", name="AMD EPYC"), "family"),  # same normalised name, no architecture
    (replace(CPU, architecture="zen5", name="Ryzen 9"), "vendor"),  # another AMD CPU
    (replace(CPU, device_type="gpu"), "default"),  # an AMD GPU: CPU results do not answer
    (GPU, "default"),
])  # fmt: skip
def test_fallback_by_device_family_and_vendor(tmp_path, no_shipped, asker, level):
    db = _db(tmp_path / "t.db", make_records(CPU))
    res = lookup("matmul", SHAPE, "float32", asker.key, db)
    assert res.level == level
    assert len(res.explain) >= 2 and "this device" in res.explain[0]
    if level == "default":
        assert res.config == templates.get("matmul").default_config() and "shipped" in " ".join(res.explain)


def test_stale_records_never_answer(tmp_path, no_shipped):
    stale = [replace(r, template_hash="0123456789abcdef") for r in make_records(CPU)]
    db = _db(tmp_path / "t.db", stale)
    res = lookup("matmul", (64, 64, 64), "float32", CPU.key, db)
    assert res.level == "default" and "current matmul version" in res.explain[0]


def test_invalid_fastest_config_is_passed_over(tmp_path, no_shipped):
    """The fastest config at the tuned shape uses VW=2; N=101 is odd, so the next valid one answers."""
    tpl = templates.get("matmul")
    wide = next(c for c in valid_configs((64, 64, 64), 400) if c["VW"] == 2)
    narrow = next(c for c in valid_configs((64, 64, 64), 400) if c["VW"] == 1)
    recs = [Record(CPU, "matmul", tpl.source_hash, "float32", (64, 64, 64),
                   Measurement(c, "ok", timing=Timing(t, t, t, 0, 3), gflops=1.0, gbps=1.0))
            for c, t in ((wide, 1e-4), (narrow, 2e-4))]
    db = _db(tmp_path / "t.db", recs)
    assert lookup("matmul", (64, 64, 64), "float32", CPU.key, db).config == wide
    assert lookup("matmul", (64, 101, 64), "float32", CPU.key, db).config == narrow


def test_shipped_results_answer_read_only(tmp_path, monkeypatch):
    shipped = tmp_path / "tuning_db"
    shipped.mkdir()
    src = _db(tmp_path / "src.db", make_records(CPU))
    path = export(shipped / "pocl.jsonl.gz", src).path
    (shipped / "broken.jsonl").write_text("not an export\n")
    before = file_digest(path)
    monkeypatch.setattr(lookup_mod, "shipped_db_dir", lambda: shipped)
    lookup_mod.clear_cache()
    try:
        own = _db(tmp_path / "own.db", make_records(GPU))  # records, but of another device
        res = lookup("matmul", SHAPE, "float32", replace(CPU, driver="new").key, own)
        assert res.level == "shipped" and res.tuned_shape == (64, 64, 64)
        assert any("broken.jsonl" in line for line in res.explain)
        assert lookup("matmul", SHAPE, "float32", GPU.key, own).level == "nearest_shape"
        assert file_digest(path) == before and sorted(p.name for p in shipped.iterdir()) == ["broken.jsonl", "pocl.jsonl.gz"]
        assert not (tmp_path / "missing.db").exists()
        assert lookup("matmul", SHAPE, "float32", CPU.key, tmp_path / "missing.db").level == "shipped"
        assert not (tmp_path / "missing.db").exists()  # a lookup never creates a database
    finally:
        lookup_mod.clear_cache()


def test_a_write_by_another_connection_is_seen(tmp_path, no_shipped):
    db = _db(tmp_path / "t.db", [])
    assert lookup("matmul", SHAPE, "float32", CPU.key, db).level == "default"
    _db(db, make_records(replace(CPU, driver="other")))
    assert lookup("matmul", SHAPE, "float32", CPU.key, db).level == "family"
    _db(db, make_records(CPU))
    assert lookup("matmul", SHAPE, "float32", CPU.key, db).level == "nearest_shape"


def test_cli_lookup_explain(tmp_path, no_shipped):
    db = _db(tmp_path / "t.db", make_records(CPU))
    res = CliRunner().invoke(main, ["lookup", "matmul", "--shape", "100x100x100", "--device", replace(CPU, driver="9").key,
                                    "--db", str(db), "--explain"])
    assert res.exit_code == 0, res.output
    assert "family" in res.output and "this device" in res.output and "answered by" in res.output


def test_lookup_with_fallback_imports_no_driver_nor_optuna(tmp_path):
    db = _db(tmp_path / "t.db", make_records(CPU))
    code = (f"import sys, tunesvc; r = tunesvc.lookup('matmul', (100, 100, 100), 'float32', {GPU.key!r}, {str(db)!r}); "
            "assert r.level in ('default', 'shipped'), r.level; "
            "bad = [m for m in ('optuna', 'pyopencl', 'pycuda') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_record_shapes_lists_the_shapes_with_ok_records(tmp_path):
    failed = [replace(r, measurement=Measurement(r.measurement.config, "compile", "error"), shape=(32, 32, 32))
              for r in make_records(GPU, shapes=((64, 64, 64),), n=2)]
    db = _db(tmp_path / "t.db", make_records(CPU) + failed)
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT device_key, shape FROM record_shapes ORDER BY 1, 2").fetchall()
    conn.close()
    assert rows == [(CPU.key, "256x256x256"), (CPU.key, "64x64x64")]


def test_the_fastest_config_of_several_family_devices_answers(tmp_path, no_shipped):
    """Two drivers of one device, the fastest config measured on the second: the merged first
    helping of both devices finds it, for a third, unseen driver."""
    slow, fast = replace(CPU, driver="1.0"), replace(CPU, driver="2.0")
    recs = make_records(slow, n=12, base=1e-3) + make_records(fast, n=12, base=1e-3)
    quickest = valid_configs((64, 64, 64), 12)[11]  # the slowest config on `slow`, the fastest on `fast`
    recs = [r for r in recs if not (r.fingerprint == fast and r.measurement.config == quickest and r.shape == (64, 64, 64))]
    recs.append(Record(fast, "matmul", templates.get("matmul").source_hash, "float32", (64, 64, 64),
                       Measurement(quickest, "ok", timing=Timing(1e-5, 1e-5, 1e-5, 0, 3), gflops=1.0, gbps=1.0)))
    db = _db(tmp_path / "t.db", recs)
    res = lookup("matmul", (64, 64, 64), "float32", replace(CPU, driver="3.0").key, db)
    assert res.level == "family" and res.config == quickest and res.time == 1e-5


def test_a_database_without_record_shapes_still_answers(tmp_path, no_shipped):
    """A file written before record_shapes existed (and opened read-only since) answers alike."""
    db = _db(tmp_path / "t.db", make_records(CPU) + make_records(GPU))
    asks = [(CPU.key, (64, 64, 64)), (CPU.key, (300, 200, 250)), (replace(GPU, driver="1").key, SHAPE)]
    before = [lookup("matmul", s, "float32", k, db) for k, s in asks]
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DROP TABLE record_shapes")
    conn.close()
    lookup_mod.clear_cache()
    after = [lookup("matmul", s, "float32", k, db) for k, s in asks]
    assert [(r.level, r.config, r.tuned_shape) for r in after] == [(r.level, r.config, r.tuned_shape) for r in before]


@pytest.mark.parametrize("union_max", [64, 1])
def test_the_first_configs_of_many_devices_in_one_statement_or_one_sort(tmp_path, no_shipped, monkeypatch, union_max):
    """Past the compound-SELECT bound, the first helping is one sorted query of all the devices:
    the same answer either way."""
    monkeypatch.setattr(reader_mod, "_UNION_MAX", union_max)
    recs = [r for d in range(4) for r in make_records(replace(CPU, driver=f"{d}.0"), n=3, base=1e-3 * (4 - d))]
    db = _db(tmp_path / "t.db", recs)
    res = lookup("matmul", (64, 64, 64), "float32", replace(CPU, driver="9.9").key, db)
    assert res.level == "family" and res.time == 1e-3 and res.config == valid_configs((64, 64, 64), 1)[0]
