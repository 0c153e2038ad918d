"""Issue 11: nothing a file, a flag or a full disk does gets a traceback, a wrong answer or a lost record.

Each case of the issue, as the command line meets it: one line naming the problem and exit code 2 (or
a per-record rejection while the rest goes in), and the database byte-for-byte as it was.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from db_helpers import CPU, GPU, file_digest, make_records, valid_configs

from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cache.exchange import FORMAT, MAX_SHORT_LINES, export, import_files
from tunesvc.cli import main

TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
HEADER = {"format": FORMAT, "format_version": 1, "tunesvc_version": "0.1.0", "created_at": "2025-01-01T00:00:00+00:00"}
lookup_mod = sys.modules["tunesvc.lookup"]


@pytest.fixture
def no_shipped(tmp_path, monkeypatch):
    folder = tmp_path / "no_tuning_db"
    monkeypatch.setattr(lookup_mod, "shipped_db_dir", lambda: folder)
    lookup_mod.clear_cache()
    yield folder
    lookup_mod.clear_cache()


def _db(path, records) -> Path:
    store = Store(path)
    store.put_many(records)
    store.close()
    return path


def _cli(*args, **kw):
    """Run the command line in this process: (exit code, stdout, the error lines)."""
    r = CliRunner().invoke(main, [str(a) for a in args], **kw)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    errors = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("tuning ")]
    return r.exit_code, r.stdout, errors


def _one_line_exit_2(*args, words: str = "", **kw) -> str:
    code, _, errors = _cli(*args, **kw)
    assert code == 2, errors
    assert len(errors) == 1 and errors[0].startswith("Error: "), errors
    assert words in errors[0], errors[0]
    return errors[0]


def _line(**changes) -> dict:
    """One valid export record line (a dict) of the CPU device, with fields changed."""
    tpl = templates.get("matmul")
    line = {"template": "matmul", "template_hash": tpl.source_hash, "dtype": "float32", "shape": "64x64x64",
            "backend": CPU.backend, "vendor": CPU.vendor, "device_type": CPU.device_type, "architecture": CPU.architecture,
            "device_name": CPU.name, "driver": CPU.driver, "status": "ok", "reason": "", "time_median": 1e-3,
            "time_min": 9e-4, "time_max": 2e-3, "time_iqr": 1e-4, "runs": 5, "gflops": 1.0, "gbps": 2.0,
            "compile_seconds": 0.1, "created_at": "2025-01-01T00:00:00+00:00", "tunesvc_version": "0.1.0",
            "source": "x", "config": dict(valid_configs((64, 64, 64), 1)[0])}
    line.update(changes)
    return line


def _export_file(path: Path, lines) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in [HEADER, *lines]))
    return path


def _kernel_tuner(path: Path, n: int = 4, **changes) -> Path:
    """A Kernel Tuner cache file of matmul configs (so a template checks every entry)."""
    tpl = templates.get("matmul")
    configs = valid_configs((64, 64, 64), n)
    cache = {",".join(str(c[p.name]) for p in tpl.params): {**dict(c), "time": 1.0 + i, "times": [1.0 + i],
                                                           "compile_time": 10.0, "benchmark_time": 5.0}
             for i, c in enumerate(configs)}
    data = {"device_name": "NVIDIA A100", "kernel_name": "matmul", "problem_size": [64, 64, 64],
            "tune_params_keys": [p.name for p in tpl.params], "tune_params": {p.name: list(p.values) for p in tpl.params},
            "cache": cache, **changes}
    path.write_text(json.dumps(data))
    return path


# ---- one string no longer aborts a whole import -------------------------------------------------
@pytest.mark.parametrize("field", ["reason", "device_name", "tunesvc_version", "created_at", "architecture"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_lone_surrogate_rejects_its_record_and_the_rest_goes_in(tmp_path, field, dry_run):
    configs = valid_configs((64, 64, 64), 2)
    bad = _line(**{field: "\ud800" if field != "created_at" else "2025-01-01T00:00:00\ud800"}, config=dict(configs[0]))
    good = _line(config=dict(configs[1]))
    path = _export_file(tmp_path / "in.jsonl", [bad, good])
    assert "\\ud800" in path.read_text()  # as a JSON escape, the only way a file can hold one
    db = tmp_path / "t.db"
    code, out, errors = _cli("import", path, "--db", db, *(["--dry-run"] if dry_run else []))
    assert code == 0 and not errors, errors
    assert "added 1" in out or "would add 1" in out
    assert "rejected 1" in out and field in out
    assert Store(db).count() == (0 if dry_run else 1)


def test_a_kernel_tuner_device_name_with_a_lone_surrogate(tmp_path):
    db = _db(tmp_path / "t.db", make_records(CPU, n=1))
    before = file_digest(db)
    bad = _kernel_tuner(tmp_path / "kt.json", device_name="GPU \ud800")
    _one_line_exit_2("import", bad, "--db", db, words="every record was rejected")
    assert file_digest(db) == before
    good = _kernel_tuner(tmp_path / "kt_good.json")
    assert import_files([good], db).added == 4  # the same file with a device name imports


# ---- provenance decides, not only speed ---------------------------------------------------------
def test_an_imported_record_never_replaces_this_devices_own_unless_asked(tmp_path, no_shipped):
    local = make_records(CPU, shapes=((64, 64, 64),), n=3)  # source 'local': measured here
    db = _db(tmp_path / "t.db", local)
    slowest = local[-1].config
    liar = _line(config=dict(slowest), time_median=1e-12, time_min=1e-12, time_max=1e-12, gflops=None, gbps=None)
    path = _export_file(tmp_path / "liar.jsonl", [liar])
    before = file_digest(db)
    s = import_files([path], db)
    assert (s.added, s.replaced) == (0, 0) and list(s.skipped) == [
        "this device's own measurement is kept (source 'local'; only --policy prefer-incoming replaces it)"]
    assert file_digest(db) == before
    res = lookup_mod.lookup("matmul", (64, 64, 64), "float32", CPU.key, db)
    assert res.level == "exact" and res.config == local[0].config
    assert import_files([path], db, policy="prefer-incoming").replaced == 1  # asked for: done
    lookup_mod.clear_cache()
    assert lookup_mod.lookup("matmul", (64, 64, 64), "float32", CPU.key, db).config == slowest


def test_an_imported_time_faster_than_the_stored_ceilings_is_rejected(tmp_path):
    db = tmp_path / "t.db"
    store = Store(db)
    store.put_ceilings(CPU.key, 20.0, 100.0, "2025-01-01T00:00:00+00:00", {"peak_gflops": 120.0})
    store.close()
    configs = valid_configs((64, 64, 64), 2)
    liar = _line(config=dict(configs[0]), time_median=1e-12, time_min=1e-12, time_max=1e-12)
    before = file_digest(db)
    why = _one_line_exit_2("import", _export_file(tmp_path / "liar.jsonl", [liar]), "--db", db, words="implausibly fast")
    assert "120.0 GFLOP/s" in why and file_digest(db) == before
    honest = _line(config=dict(configs[1]))  # 2x64^3 FLOP in 1 ms: 0.5 GFLOP/s
    assert import_files([_export_file(tmp_path / "ok.jsonl", [honest])], db).added == 1


# ---- bounded cost -------------------------------------------------------------------------------
def test_a_small_gzip_of_blank_lines_is_refused_at_once(tmp_path):
    import time

    path = tmp_path / "blank.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(HEADER) + "\n").encode() + b"\n" * (2 << 20), 9))
    assert path.stat().st_size < 20_000 and 2 << 20 > MAX_SHORT_LINES  # 2 MB of newlines in a few KB
    db = _db(tmp_path / "t.db", make_records(CPU, n=1))
    before = file_digest(db)
    started = time.perf_counter()
    _one_line_exit_2("import", path, "--db", db, words="lines too short to hold a record")
    assert time.perf_counter() - started < 10 and file_digest(db) == before
    few = _export_file(tmp_path / "few.jsonl", [_line(), _line()])
    few.write_text(few.read_text().replace("\n", "\n\n\n"))  # a few blank lines are nobody's problem
    assert import_files([few], db).read == 2


def test_kernel_tuner_files_are_read_with_bounded_memory(tmp_path):
    """100 MB of entries (the whole file parsed at once took 7.8 GB for 477 MB) and a 20 MB string."""
    big = tmp_path / "big.json.gz"
    log = "x" * 250_000
    with gzip.open(big, "wt", compresslevel=1) as f:
        f.write('{"device_name": "G", "kernel_name": "k", "problem_size": [8], "tune_params": {"a": [1]}, "cache": {')
        for i in range(400):
            f.write(f'{", " if i else ""}"{i}": {{"a": 1, "time": "RuntimeFailedConfig", "log": "{log}"}}')
        f.write("}}")
    # VmHWM, not ru_maxrss: the child's ru_maxrss starts from this (large) process's
    code = ("import re; from tunesvc.replay.files import read_header, entries; "
            f"h = read_header({str(big)!r}); n = sum(1 for _ in entries(h)); "
            "print(n, int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    count, peak_mib = map(int, out.stdout.split())
    assert count == 400 and peak_mib < 150, peak_mib
    huge = tmp_path / "huge.json"
    huge.write_text('{"tune_params": {"a": [1]}, "device_name": "' + "x" * (20 << 20) + '", "cache": {}}')
    db = _db(tmp_path / "t.db", [])
    before = file_digest(db)
    _one_line_exit_2("import", huge, "--db", db, words="longer than")
    _one_line_exit_2("replay", huge, words="longer than")
    assert file_digest(db) == before


# ---- Kernel Tuner and T4 files: one line, never a traceback --------------------------------------
def _kt_text(**changes) -> str:
    base = {"device_name": "GPU", "kernel_name": "k", "problem_size": [64], "tune_params_keys": ["a"],
            "tune_params": {"a": [1, 2]}, "cache": {"1": {"a": 1, "time": 1.0, "times": [1.0]}}}
    return json.dumps({**base, **changes})


T4_OK = {"configuration": {"a": 1}, "invalidity": "correct", "measurements": [{"name": "time", "value": 1.0}],
         "times": {"runtimes": [1.0]}}
HOSTILE = {
    "time 1e400": _kt_text().replace('"time": 1.0', '"time": 1e400'),
    "time 10**400": _kt_text().replace('"time": 1.0', '"time": 1' + "0" * 400),
    "time Infinity": _kt_text().replace('"time": 1.0', '"time": Infinity'),
    "time NaN": _kt_text().replace('"time": 1.0', '"time": NaN'),
    "a sample -Infinity": _kt_text().replace('"times": [1.0]', '"times": [-Infinity]'),
    "cache a list": _kt_text(cache=[1, 2]),
    "cache a number": _kt_text(cache=5),
    "tune_params a number": _kt_text(tune_params=5),
    "tune_params values a number": _kt_text(tune_params={"a": 5}),
    "tune_params_keys a string": _kt_text(tune_params_keys="a"),
    "a list as a parameter value": _kt_text(cache={"1": {"a": [1], "time": 1.0}}),
    "an object as a parameter value": _kt_text(cache={"1": {"a": {"b": 1}, "time": 1.0}}),
    "an entry that is a list": _kt_text(cache={"1": [1, 2]}),
    "a value not in tune_params": _kt_text(cache={"1": {"a": 7, "time": 1.0}}),
    "device_name an object": _kt_text(device_name={"x": 1}),
    "T4 empty measurements": json.dumps({"results": [{**T4_OK, "measurements": []}]}),
    "T4 measurements a string": json.dumps({"results": [{**T4_OK, "measurements": "x"}]}),
    "T4 result a number": json.dumps({"results": [5]}),
    "T4 configuration a list": json.dumps({"results": [{**T4_OK, "configuration": [1]}]}),
    "T4 results of other parameters": json.dumps({"results": [T4_OK, {**T4_OK, "configuration": {"b": 1}}]}),
    "T4 no results": json.dumps({"results": []}),
    "nested 100,000 deep": '{"tune_params": ' + "[" * 100_000 + "]" * 100_000 + ', "cache": {}}',
    "data after the object": _kt_text() + " trailing",
    "cut in the middle": _kt_text()[:60],
    "not UTF-8": _kt_text().replace("GPU", "G\udcffU").encode("utf-8", "surrogateescape").decode("latin-1"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_kernel_tuner_or_t4_file_is_one_line_for_import_and_replay(tmp_path, name):
    path = tmp_path / "hostile.json"
    text = HOSTILE[name]
    path.write_bytes(text.encode("latin-1") if name == "not UTF-8" else text.encode("utf-8"))
    db = _db(tmp_path / "t.db", make_records(CPU, n=1))
    before = file_digest(db)
    _one_line_exit_2("import", path, "--db", db)
    assert file_digest(db) == before
    _one_line_exit_2("replay", path, "--repeats", 1)


def test_replay_and_import_of_a_gzipped_hostile_file_and_of_a_cut_gzip(tmp_path):
    raw = gzip.compress(HOSTILE["time Infinity"].encode())
    for name, data in (("inf.json.gz", raw), ("cut.json.gz", raw[: len(raw) // 2])):
        (tmp_path / name).write_bytes(data)
        _one_line_exit_2("replay", tmp_path / name)
        _one_line_exit_2("import", tmp_path / name, "--db", tmp_path / "t.db")


# ---- export writes only where it may ------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_export_never_replaces_a_device_node(tmp_path):
    db = _db(tmp_path / "t.db", make_records(CPU, n=1))
    _one_line_exit_2("export", "/dev/full", "--db", db, words="not a regular file")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    link = tmp_path / "link.jsonl"
    link.symlink_to("/dev/null")
    _one_line_exit_2("export", link, "--db", db, words="not a regular file")
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    (tmp_path / "folder.jsonl").mkdir()
    _one_line_exit_2("export", tmp_path / "folder.jsonl", "--db", db)


def test_export_to_the_longest_file_name(tmp_path):
    db = _db(tmp_path / "t.db", make_records(CPU, n=1))
    for length, suffix in ((251, ".jsonl"), (255, ".jsonl"), (255, ".jsonl.gz")):  # 255 bytes: NAME_MAX
        name = "x" * (length - len(suffix)) + suffix
        code, out, errors = _cli("export", tmp_path / name, "--db", db)
        assert code == 0 and not errors, errors
        assert (tmp_path / name).stat().st_size > 100
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_export_replaces_a_regular_file_and_keeps_its_bytes_stable(tmp_path):
    db = _db(tmp_path / "t.db", make_records(CPU, n=2))
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    export(target, db)
    first = file_digest(target)
    export(target, db)
    assert file_digest(target) == first and target.read_text().startswith('{"created_at"')


# ---- show, export and lookup on a database they cannot read --------------------------------------
def _damaged(tmp_path: Path, kind: str) -> Path:
    if kind == "not SQLite":
        path = tmp_path / "notes.db"
        path.write_text("my notes\n" * 100)
    elif kind == "truncated":
        good = _db(tmp_path / "good.db", make_records(CPU, shapes=((64, 64, 64), (128, 128, 128), (96, 96, 96)), n=60))
        sqlite3.connect(good).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        path = tmp_path / "cut.db"
        path.write_bytes(good.read_bytes()[: 3 * 4096])
    elif kind == "another program's":
        path = tmp_path / "other.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (text)")
        conn.commit()
        conn.close()
    elif kind == "a folder":
        path = tmp_path / "folder.db"
        path.mkdir()
    else:
        path = Path("/dev/null")
    return path


DAMAGED = ["not SQLite", "truncated", "another program's", "a folder", "/dev/null"]


@pytest.mark.parametrize("kind", DAMAGED)
@pytest.mark.parametrize("command", [["show"], ["export", "out.jsonl"], ["lookup", "matmul", "--shape", "64x64x64",
                                                                          "--device", CPU.key]])
def test_a_database_that_cannot_be_read_is_one_line_and_left_alone(tmp_path, no_shipped, kind, command, monkeypatch):
    db = _damaged(tmp_path, kind)
    before = file_digest(db) if db.is_file() and db != Path("/dev/null") else None
    monkeypatch.chdir(tmp_path)
    why = _one_line_exit_2(*command, "--db", db)
    assert str(db) in why
    assert not (tmp_path / "out.jsonl").exists()
    if before is not None:
        assert file_digest(db) == before


def _unreadable(monkeypatch, path: Path) -> None:
    """This user may not open ``path`` (as root every file opens: the refusal is simulated)."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    real = sqlite3.connect

    def connect(target, *args, **kw):
        if str(path) in str(target):
            raise sqlite3.OperationalError("unable to open database file")
        return real(target, *args, **kw)

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_a_database_this_user_cannot_open(tmp_path, no_shipped, monkeypatch):
    db = _db(tmp_path / "t.db", make_records(CPU, n=2))
    before = file_digest(db)
    _unreadable(monkeypatch, db)
    for command in (["show"], ["export", tmp_path / "out.jsonl"], ["lookup", "matmul", "--shape", "64x64x64", "--device", CPU.key]):
        _one_line_exit_2(*command, "--db", db, words="unable to open")
    res = lookup_mod.lookup("matmul", (64, 64, 64), "float32", CPU.key, db)
    assert res.level == "default" and "unable to open" in res.explain[0]
    monkeypatch.undo()
    assert file_digest(db) == before and not (tmp_path / "out.jsonl").exists()


def test_the_lookup_api_falls_back_saying_so_with_one_warning_per_database(tmp_path, no_shipped, caplog):
    cut, notes = _damaged(tmp_path, "truncated"), _damaged(tmp_path, "not SQLite")
    caplog.set_level(logging.WARNING, logger="tunesvc.lookup")
    for _ in range(3):
        for db in (cut, notes):
            res = lookup_mod.lookup("matmul", (64, 64, 64), "float32", CPU.key, db)
            assert res.level == "default"
            assert res.explain[0].startswith(f"database: cannot read the tuning database {db}")
            assert "a fallback: the tuning database could not be read" in res.explain[-1]
            assert not any("no ok record" in line for line in res.explain)  # the exact record may well be there
    warnings = [r for r in caplog.records if r.name == "tunesvc.lookup"]
    assert len(warnings) == 2 and {str(cut), str(notes)} == {str(r.args[0]) for r in warnings}
    good = _db(tmp_path / "good2.db", make_records(CPU, n=1))
    assert lookup_mod.lookup("matmul", (64, 64, 64), "float32", CPU.key, good).level == "exact"


def test_a_fresh_database_file_is_no_problem(tmp_path, no_shipped, caplog):
    """A file its first writer has created but not filled yet is a database without records."""
    empty = tmp_path / "empty.db"
    empty.touch()
    res = lookup_mod.lookup("matmul", (64, 64, 64), "float32", CPU.key, empty)
    assert res.level == "default" and "cannot read" not in " ".join(res.explain) and not caplog.records
    code, out, errors = _cli("show", "--db", empty)
    assert code == 0 and "no records match" in out


# ---- flags at the edge --------------------------------------------------------------------------
KT_SMALL = Path(__file__).parent / "data" / "pnpoly_RTX_3090_small.json.gz"
BAD_FLAGS = [
    (["show", "--limit", "-1"], "--limit must be at least 0"),
    (["show", "--limit", str(10**12)], "--limit must be at most"),
    (["replay", KT_SMALL, "--budget", "0"], "--budget must be at least 1"),
    (["replay", KT_SMALL, "--budget", str(10**9)], "--budget must be at most"),
    (["replay", KT_SMALL, "--repeats", "0"], "--repeats must be at least 1"),
    (["replay", KT_SMALL, "--repeats", "100000"], "--repeats must be at most"),
    (["replay", KT_SMALL, "--seed", "-5"], "--seed must be at least 0"),
    (["replay", KT_SMALL, "--seed", str(2**32)], "--seed must be at most"),
    (["import", KT_SMALL, "--source", "local"], "source label 'local'"),
    (["import", KT_SMALL, "--source", "a\x1b]0;title\x07b"], "printable"),
    (["import", KT_SMALL, "--source", "\ud800"], "printable"),
    (["import", KT_SMALL, "--source", "x" * 300], "printable"),
    (["lookup", "a" * 131_000 + ".py", "--shape", "4x4x4"], ""),
    (["lookup", "a" * 300, "--shape", "4x4x4"], "unknown template"),
    (["lookup", "matmul", "--shape", "9" * 5000 + "x4x4"], "MxNxK"),
    (["show", "--template", "a" * 131_000 + ".py"], None),  # a filter, not a template to load: no records
    (["tune", "matmul", "--timeout", "nan"], "--timeout"),
    (["tune", "matmul", "--timeout", "inf"], "--timeout"),
    (["tune", "matmul", "--timeout", "1e300"], "--timeout"),
    (["tune", "matmul", "--seed", "-5"], "--seed"),
    (["tune", "matmul", "--time-budget", "nan"], "--time-budget"),
    (["tune", "matmul", "--build-workers", "100000"], "--build-workers"),
    (["tune", "matmul", "--no-isolation", "--timeout", "5"], "--timeout needs isolation"),
]


@pytest.mark.parametrize("args, words", BAD_FLAGS)
def test_a_bad_flag_is_one_line_and_exit_2(tmp_path, args, words):
    db = _db(tmp_path / "t.db", make_records(CPU, n=1))
    before = file_digest(db)
    env = {"TUNESVC_DB": str(db)}  # every command's database, replay's too (it has no --db)
    if words is None:
        code, out, errors = _cli(*args, env=env)
        assert code == 0 and not errors
    else:
        line = _one_line_exit_2(*args, words=words, env=env)
        assert len(line) < 2100  # a 131 KB argument is not echoed whole
    assert file_digest(db) == before


@pytest.mark.parametrize("url, words", [("foo://x", "cannot open --storage"), ("mysql://u@h/db", "driver")])
def test_a_bad_storage_url_is_one_line(tmp_path, cl_info, url, words):
    _one_line_exit_2("tune", "matmul", "--shape", "8x8x8", "--trials", 1, "--device", cl_info.id, "--db", tmp_path / "t.db",
                     "--storage", url, words=words)


# ---- the terminal ------------------------------------------------------------------------------
def test_stored_strings_reach_the_terminal_escaped(tmp_path, no_shipped):
    title = "\x1b]0;owned\x07"
    failed = _line(status="build", reason=f"error {title} \x9b2J \u202e", time_median=None, time_min=None,
                   time_max=None, time_iqr=None, runs=0, gflops=None, gbps=None)
    db = tmp_path / "t.db"
    assert import_files([_export_file(tmp_path / "esc.jsonl", [failed])], db).added == 1
    conn = sqlite3.connect(db)  # a file another tool wrote may hold anything in any column
    conn.execute("UPDATE measurements SET device_name = ?, driver = ?", ("EPYC\x1b[2J", "3.0\r"))
    conn.commit()
    conn.close()
    code, out, errors = _cli("show", "--db", db)
    assert code == 0 and not errors
    assert not any(c in out for c in "\x1b\x07\x9b\u202e\r") and "\\x1b]0;owned\\x07" in out and "\\u202e" in out
    code, out, _ = _cli("show", "--db", db, "--json")
    assert json.loads(out)["records"][0]["reason"].startswith("error \x1b]0;owned")  # JSON keeps the value, escaped
    code, out, _ = _cli("lookup", "matmul", "--shape", "64x64x64", "--device", CPU.key, "--db", db, "--explain")
    assert code == 0 and "\x1b" not in out


# ---- a full disk ---------------------------------------------------------------------------------
def _full_disk_at(size: int):
    """For a child process: files may not grow past ``size`` bytes (the kernel's file size limit, the
    closest to a full disk a test can get without one): writes fail as they would on a full disk."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_import_and_export_on_a_full_disk(tmp_path):
    db = _db(tmp_path / "t.db", make_records(CPU, n=2))
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    src = _db(tmp_path / "src.db", make_records(GPU, n=400))
    incoming = export(tmp_path / "in.jsonl", src).path
    before = file_digest(db)
    limit = _full_disk_at(db.stat().st_size + 8192)
    for args in (["import", incoming, "--db", db], ["export", tmp_path / "out.jsonl", "--db", src]):
        r = subprocess.run([TUNESVC, *map(str, args)], preexec_fn=limit, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert file_digest(db) == before and Store(db).count() == 4
    assert not (tmp_path / "out.jsonl").exists()


def test_a_file_of_mostly_rejected_records_is_refused_whole(tmp_path, monkeypatch):
    """Past MAX_REJECTED rejections, and more than were accepted, a file is refused before anything is
    written (each rejection costs a fixed time; a small .gz can hold millions)."""
    from tunesvc.cache import exchange

    monkeypatch.setattr(exchange, "MAX_REJECTED", 5)
    configs = valid_configs((64, 64, 64), 3)
    good = [_line(config=dict(c)) for c in configs[:2]]
    bad = [_line(shape="0x1x1", config=dict(configs[2]), reason=str(i)) for i in range(8)]
    db = _db(tmp_path / "t.db", make_records(GPU, n=1))
    before = file_digest(db)
    _one_line_exit_2("import", _export_file(tmp_path / "bad.jsonl", good + bad), "--db", db,
                     words="more than 5 records rejected")
    assert file_digest(db) == before
    mostly_good = [_line(config=dict(c), driver=f"d{i}") for i in range(6) for c in configs[:2]]
    assert import_files([_export_file(tmp_path / "ok.jsonl", mostly_good + bad)], db).added == 12


@pytest.fixture
def immutable(tmp_path):
    """A database no one may write, root included (chattr +i), or skip where the file system cannot."""
    db = _db(tmp_path / "frozen.db", make_records(CPU, n=2))
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        yield db
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)


def test_an_immutable_database(immutable, tmp_path, cl_info):
    before = file_digest(immutable)
    incoming = _export_file(tmp_path / "in.jsonl", [_line(driver="other")])
    _one_line_exit_2("import", incoming, "--db", immutable, words="nothing was imported")
    _one_line_exit_2("tune", "matmul", "--shape", "8x8x8", "--trials", 1, "--device", cl_info.id, "--db", immutable,
                     words="readonly database")
    code, out, errors = _cli("show", "--db", immutable)  # reading it is fine
    assert code == 0 and "matmul" in out and not errors
    assert file_digest(immutable) == before
