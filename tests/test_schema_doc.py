"""docs/schema.md is enough to read a tuning database from another language: a C program that
follows only that page (examples/c/tunesvc_lookup.c), built here with gcc and -lsqlite3, answers
as tunesvc.lookup does at the levels the page says it can."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from db_helpers import CPU, make_records

import tunesvc
from tunesvc import templates
from tunesvc.cache import Store

SOURCE = Path(__file__).resolve().parent.parent / "examples" / "c" / "tunesvc_lookup.c"


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    if shutil.which("gcc") is None or not Path("/usr/include/sqlite3.h").exists():
        pytest.skip("gcc and the SQLite headers are needed (Debian: apt-get install gcc libsqlite3-dev)")
    exe = tmp_path_factory.mktemp("c") / "tunesvc_lookup"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(SOURCE), "-lsqlite3", "-lm"], check=True)
    return exe


def ask(exe, db, template, shape, dtype, device_key, *hash_):
    out = subprocess.run([str(exe), str(db), template, shape, dtype, device_key, *hash_], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    if line == "none":
        return None
    level, tuned, time_s, config = line.split(" ", 3)
    return level, tuned, float(time_s), json.loads(config)


@pytest.mark.parametrize("shape, level", [("64x64x64", "exact"), ("70x64x64", "nearest_shape"),
                                          ("200x256x256", "nearest_shape"), ("256x256x256", "exact")])
def test_the_c_reader_agrees_with_lookup(reader, tmp_path, shape, level, monkeypatch):
    monkeypatch.setenv("TUNESVC_SHIPPED_DB", str(tmp_path / "none"))
    db = tmp_path / "t.db"
    store = Store(db)
    store.put_many(make_records())
    store.close()
    want = tunesvc.lookup("matmul", shape, "float32", CPU.key, db)
    got = ask(reader, db, "matmul", shape, "float32", CPU.key, templates.get("matmul").source_hash)
    assert want.level == level and got is not None
    assert got[0] == want.level and got[3] == want.params and got[2] == want.time
    assert got == ask(reader, db, "matmul", shape, "float32", CPU.key)  # the newest hash is the current one here


def test_on_a_database_tuned_for_real(reader, tmp_path, cl_info, monkeypatch):
    monkeypatch.setenv("TUNESVC_SHIPPED_DB", str(tmp_path / "none"))
    db = tmp_path / "real.db"
    tunesvc.tune("matmul", (16, 16, 16), device=cl_info, db=db, trials=3, seed=0)
    want = tunesvc.lookup("matmul", "16x16x16", "float32", cl_info.fingerprint.key, db)
    got = ask(reader, db, "matmul", "16x16x16", "float32", cl_info.fingerprint.key)
    assert want.level == "exact" and got[0] == "exact" and got[3] == want.params and got[2] == want.time
    assert ask(reader, db, "matmul", "16x16x16", "float16", cl_info.fingerprint.key) is None  # never tuned: no answer
