"""Export, validated import and merge of tuning databases (real SQLite files, real templates)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from db_helpers import CPU, GPU, db_digest, export_lines, file_digest, make_records, valid_configs

from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cache.exchange import FORMAT, export, import_files
from tunesvc.cli import main
from tunesvc.errors import ImportFileError, UsageError
from tunesvc.types import Measurement, Record, Timing


def _db(path, records):
    store = Store(path)
    store.put_many(records)
    store.close()
    return path


@pytest.fixture
def src(tmp_path):
    recs = make_records(CPU) + make_records(GPU, shapes=((128, 128, 128),), n=3)
    bad = valid_configs((64, 64, 64), 6)[5]
    recs.append(Record(CPU, "matmul", templates.get("matmul").source_hash, "float32", (64, 64, 64),
                       Measurement(bad, "build", "error: expected ';' { }"), "2025-01-02T00:00:00+00:00", "0.1.0"))
    return _db(tmp_path / "src.db", recs)


def _record_line(**changes) -> dict:
    """One valid export line (a dict), with fields changed."""
    tpl = templates.get("matmul")
    line = {"template": "matmul", "template_hash": tpl.source_hash, "dtype": "float32", "shape": "64x64x64",
            "backend": "opencl", "vendor": "AMD", "device_type": "cpu", "architecture": "znver3",
            "device_name": "pthread-AMD EPYC", "driver": "3.0", "status": "ok", "reason": "",
            "time_median": 1e-3, "time_min": 9e-4, "time_max": 2e-3, "time_iqr": 1e-4, "runs": 5, "gflops": 1.0,
            "gbps": 2.0, "compile_seconds": 0.1, "created_at": "2025-01-01T00:00:00+00:00", "tunesvc_version": "0.1.0",
            "source": "local", "config": dict(valid_configs((64, 64, 64), 1)[0])}
    line.update(changes)
    return line


def _write(path, lines, header=None):
    header = header or {"format": FORMAT, "format_version": 1, "tunesvc_version": "0.1.0", "created_at": "2025-01-01T00:00:00+00:00"}
    with open(path, "w") as f:
        f.write(json.dumps(header) + "\n")
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


# ---- export ------------------------------------------------------------------------------
def test_export_is_stable_and_byte_identical(src, tmp_path):
    a = export(tmp_path / "a.jsonl", src)
    b = export(tmp_path / "b.jsonl", src)
    assert a.records == 14 and file_digest(a.path) == file_digest(b.path)
    lines = export_lines(a.path)
    assert lines[0]["format"] == FORMAT and lines[0]["format_version"] == 1 and lines[0]["created_at"] == "2025-01-02T00:00:00+00:00"
    keys = [(r["backend"], r["template"], r["shape"], json.dumps(r["config"], sort_keys=True)) for r in lines[1:]]
    assert len(set(keys)) == 14
    gz1, gz2 = export(tmp_path / "a.jsonl.gz", src), export(tmp_path / "b.jsonl.gz", src)
    assert file_digest(gz1.path) == file_digest(gz2.path)
    assert gzip.decompress(Path(gz1.path).read_bytes()) == Path(a.path).read_bytes()


def test_export_filters_and_best_only(src, tmp_path):
    gpu = export(tmp_path / "g.jsonl", src, device="A100")
    assert gpu.records == 3 and {r["device_name"] for r in export_lines(gpu.path)[1:]} == {GPU.name}
    best = export_lines(export(tmp_path / "best.jsonl", src, best_only=True).path)[1:]
    assert len(best) == 3 and all(r["status"] == "ok" and r["time_median"] == 1e-3 for r in best)
    assert export(tmp_path / "none.jsonl", src, template="nosuch").records == 0


# ---- import and merge --------------------------------------------------------------------
def test_round_trip_keeps_every_field(src, tmp_path):
    path = export(tmp_path / "a.jsonl.gz", src).path
    dst = tmp_path / "dst.db"
    s = import_files([path], dst)
    assert (s.added, s.replaced, s.rejected, s.read) == (14, 0, {}, 14)
    again = export(tmp_path / "b.jsonl.gz", dst)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "source"} for r in rows]  # noqa: E731
    assert strip(export_lines(again.path)) == strip(export_lines(path))
    assert {r.source for r in Store(dst, readonly=True).records()} == {"a.jsonl.gz"}


def test_importing_twice_changes_nothing(src, tmp_path):
    path = export(tmp_path / "a.jsonl", src).path
    dst = _db(tmp_path / "dst.db", [])
    import_files([path], dst)
    before = db_digest(dst)
    s = import_files([path], dst)
    assert s.added == 0 and s.replaced == 0 and s.skipped == {"identical record already present": 14}
    assert db_digest(dst) == before


@pytest.mark.parametrize("policy, stored_source, local_time, expect_time, outcome", [
    ("keep-fastest", "colleague.jsonl", 5e-3, 1e-3, "replaced"),
    ("keep-fastest", "colleague.jsonl", 5e-4, 5e-4, "skipped"),
    ("keep-fastest", "local", 5e-3, 5e-3, "skipped"),  # this device's own measurement: provenance decides, not speed
    ("prefer-local", "local", 5e-3, 5e-3, "skipped"),
    ("prefer-local", "colleague.jsonl", 5e-3, 5e-3, "skipped"),
    ("prefer-incoming", "local", 5e-4, 1e-3, "replaced"),
])  # fmt: skip
def test_policies(tmp_path, policy, stored_source, local_time, expect_time, outcome):
    incoming = _write(tmp_path / "in.jsonl", [_record_line()])
    cfg = valid_configs((64, 64, 64), 1)[0]
    local = Record(CPU, "matmul", templates.get("matmul").source_hash, "float32", (64, 64, 64),
                   Measurement(cfg, "ok", timing=Timing(local_time, local_time, local_time, 0.0, 3), gflops=1.0, gbps=1.0),
                   source=stored_source)
    dst = _db(tmp_path / "dst.db", [local])
    s = import_files([incoming], dst, policy=policy)
    assert (s.replaced == 1) == (outcome == "replaced") and (sum(s.skipped.values()) == 1) == (outcome == "skipped")
    [rec] = Store(dst, readonly=True).records()
    assert rec.measurement.time == expect_time


def test_duplicates_inside_one_import_follow_the_policy(tmp_path):
    slow, fast = _record_line(time_median=4e-3, time_max=5e-3), _record_line()
    path = _write(tmp_path / "in.jsonl", [slow, fast, slow])
    dst = tmp_path / "dst.db"
    s = import_files([path], dst)
    assert (s.added, s.replaced, sum(s.skipped.values())) == (1, 1, 1)
    assert [r.measurement.time for r in Store(dst, readonly=True).records()] == [1e-3]


def test_dry_run_reports_without_writing(src, tmp_path):
    path = export(tmp_path / "a.jsonl", src).path
    dst = _db(tmp_path / "dst.db", make_records(CPU, n=2, base=1e-4))
    before = db_digest(dst)
    dry = import_files([path], dst, dry_run=True)
    assert db_digest(dst) == before
    real = import_files([path], dst)
    assert (dry.added, dry.replaced, dry.skipped) == (real.added, real.replaced, real.skipped)
    assert real.added == 10 and real.skipped  # the two local configs per shape are faster


def test_stale_records_are_kept_but_counted(tmp_path):
    path = _write(tmp_path / "old.jsonl", [_record_line(template_hash="0123456789abcdef")])
    dst = tmp_path / "dst.db"
    s = import_files([path], dst)
    assert s.added == 1 and s.stale == 1


# ---- untrusted input ---------------------------------------------------------------------
BAD_RECORDS = [
    ({"template": "nosuch"}, "unknown template"),
    ({"template": "../../etc/passwd.py"}, "unknown template"),
    ({"config": {"MDIM": 4}}, "missing parameter"),
    ({"config": {**dict(valid_configs((64, 64, 64), 1)[0]), "EVIL": 1}}, "unknown parameter"),
    ({"config": {**dict(valid_configs((64, 64, 64), 1)[0]), "VW": 3}}, "is not one of"),
    ({"config": {**dict(valid_configs((64, 64, 64), 1)[0]), "VW": 1.0}}, "wrong type"),
    ({"config": [1, 2]}, "config must be an object"),
    ({"shape": "64x64"}, "dimension"),
    ({"shape": "0x64x64"}, "must be >= 1"),
    ({"shape": 64}, "shape must be a string"),
    ({"dtype": "float128"}, "unknown dtype"),
    ({"time_median": -1.0}, "outside"),
    ({"time_median": 1e308, "time_max": 1e308}, "outside"),
    ({"time_median": "fast"}, "must be a number"),
    ({"time_median": True}, "must be a number"),
    ({"time_min": 5e-3}, "time_min <= time_median"),
    ({"runs": 10**30}, "outside"),
    ({"runs": 2.5}, "integer"),
    ({"status": "great"}, "status"),
    ({"status": "build", "reason": "x"}, "has no times"),
    ({"time_median": None}, "an ok record needs"),
    ({"device_name": "a|b"}, "'|'"),
    ({"device_name": "x" * 500}, "longer than"),
    ({"reason": "r" * 5000}, "longer than"),
    ({"driver": 3}, "must be a string"),
    ({"device_type": "toaster"}, "device_type"),
    ({"backend": "Robert'); DROP TABLE measurements;--"}, "backend"),
    ({"template_hash": "zz"}, "template_hash"),
    ({"created_at": "yesterday"}, "ISO 8601"),
    ({"extra_field": 1}, "unknown field"),
]  # fmt: skip


def test_each_bad_record_is_rejected_with_its_reason(tmp_path):
    good = _record_line()
    lines = [_record_line(**change) for change, _ in BAD_RECORDS]
    raw = ['{"template": "matmul", "template": "x"}', "[1, 2, 3]", '{"time_median": NaN}', '{"a": Infinity}',
           json.dumps(good).replace('"gflops": 1.0', '"gflops": 1e999'), "{not json", "[" * 20_000 + "]" * 20_000, '{"a": "' + "x" * 70_000 + '"}', good.__repr__()]
    missing = {k: v for k, v in good.items() if k != "gflops"}
    path = _write(tmp_path / "bad.jsonl", lines + raw + [missing, good])
    dst = tmp_path / "dst.db"
    s = import_files([path], dst)
    assert s.added == 1 and sum(s.rejected.values()) == len(lines) + len(raw) + 1
    examples = dict(e.split(": ", 1) for e in s.examples)
    for i, (_, reason) in enumerate(BAD_RECORDS):
        assert reason in examples[f"bad.jsonl:{i + 2}"], (i, examples[f"bad.jsonl:{i + 2}"])
    reasons = " ".join(s.rejected)
    for needle in ("duplicate key", "must be a JSON object", "non-finite", "not finite", "not valid JSON",
                   "nested", "line longer than", "missing field"):
        assert needle in reasons
    assert Store(dst, readonly=True).count() == 1


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\x00\x01\x02binary\xff\xfe\n\x00", "not a tunesvc export"),
    (b'{"format": "other"}\n', "neither a tunesvc export .* nor a Kernel Tuner or T4 file"),
    (b'{"results": 5}', "neither a tunesvc export"),
    (b'{"format": "tunesvc-db", "format_version": 99}\n', "upgrade tunesvc"),
    (b"SQLite format 3\x00" + b"\x00" * 100, "is a SQLite database"),
])  # fmt: skip
def test_files_that_are_not_exports_leave_the_db_untouched(tmp_path, content, message):
    dst = _db(tmp_path / "dst.db", make_records(CPU, n=1))
    before = file_digest(dst)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    with pytest.raises(ImportFileError, match=message):
        import_files([bad], dst)
    assert file_digest(dst) == before


def test_truncated_gzip_rolls_back_everything(src, tmp_path):
    good = export(tmp_path / "good.jsonl", src).path
    full = Path(export(tmp_path / "a.jsonl.gz", src).path).read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(full[: len(full) * 2 // 3])
    dst = _db(tmp_path / "dst.db", make_records(GPU, n=1))
    before = file_digest(dst)
    with pytest.raises(ImportFileError, match="truncated or corrupt"):
        import_files([good, cut], dst)  # the good file's records are rolled back with the rest
    assert file_digest(dst) == before and Store(dst, readonly=True).count() == 2


def test_bad_policy_and_source_label(tmp_path):
    with pytest.raises(UsageError, match="unknown policy"):
        import_files([tmp_path / "x"], tmp_path / "d.db", policy="newest")
    with pytest.raises(UsageError, match="source label"):
        import_files([tmp_path / "x"], tmp_path / "d.db", source="a|b")


# ---- CLI ---------------------------------------------------------------------------------
def test_cli_export_import_and_errors(src, tmp_path):
    r = CliRunner()
    out = tmp_path / "cli.jsonl.gz"
    res = r.invoke(main, ["export", str(out), "--db", str(src), "--best-only"])
    assert res.exit_code == 0 and "exported 3 records" in res.output
    dst = tmp_path / "dst.db"
    res = r.invoke(main, ["import", str(out), "--db", str(dst), "--dry-run"])
    assert res.exit_code == 0 and "dry run" in res.output and not Store(dst, readonly=True).count()
    res = r.invoke(main, ["import", str(out), "--db", str(dst), "--source", "colleague", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["added"] == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    res = r.invoke(main, ["import", str(bad), "--db", str(dst)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "not a tunesvc export" in res.output
    res = r.invoke(main, ["import", str(src), "--db", str(dst)])
    assert res.exit_code == 2 and "SQLite database" in res.output


def test_show_marks_stale_records(tmp_path):
    from dataclasses import replace

    current = make_records(CPU, shapes=((64, 64, 64),), n=1)
    old = [replace(r, template_hash="0123456789abcdef", shape=(32, 32, 32)) for r in current]
    db = _db(tmp_path / "t.db", current + old)
    res = CliRunner().invoke(main, ["show", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    assert sorted((r["shape"], r["status"], r["stale"]) for r in json.loads(res.output)["records"]) == [
        ("32x32x32", "ok", True), ("64x64x64", "ok", False)]


# ---- the fast paths agree with the plain ones ------------------------------------------------
def _encoder_line(row) -> str:
    """An export line as the first version wrote it: the row as a dict through JSONEncoder."""
    from tunesvc.cache.exchange import _LINE_FIELDS

    head = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode(dict(zip(_LINE_FIELDS, row)))
    return f'{head[:-1]},"config":{row[-1]}}}\n'


def test_export_lines_are_what_the_json_encoder_writes(monkeypatch):
    from tunesvc.cache import exchange

    base = ("matmul", "0123456789abcdef", "float32", "64x64x64", "opencl", "AMD", "cpu", "znver3", "EPYC", "3.0",
            "ok", "", 1e-3, 9e-4, 2e-3, 1e-4, 5, 1.0, 2.0, 0.1, "2025-01-01T00:00:00+00:00", "0.1.0", "local", '{"A":1}')
    odd = [base,
           base[:4] + ("ön ✓ \"q\" \\ \x01 %s %d %%",) + base[5:],  # non-ASCII, quotes, control, % signs
           base[:12] + (None, None, None, None, 0, None, None, 0.0) + base[20:],  # a failed record's numbers
           base[:12] + (1e-300, 1e16, 123456789.125, 3, 7, 1e22, 5e-324, 2) + base[20:],  # ints, exponents
           base[:20] + ("2025-01-01T00:00:00+00:00", "0.1.0", "50% of a label {x}", '{"A":2}')]
    monkeypatch.setattr(exchange, "_MEMO_MAX", 1)  # the memo is cleared between rows too
    assert list(exchange._lines(odd + odd)) == [_encoder_line(r) for r in odd + odd]
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError):
            list(exchange._lines([base[:12] + (bad,) + base[13:]]))


def test_export_of_a_large_database_matches_the_encoder(tmp_path):
    """Many rows, so the chunked writer thread and gzip both run; the file is the encoder's lines."""
    from tunesvc.cache.exchange import _export_query

    db = _db(tmp_path / "many.db", make_records(CPU, shapes=((64, 64, 64), (128, 128, 128), (256, 64, 32)), n=40)
             + make_records(GPU, n=40))
    for name in ("out.jsonl", "out.jsonl.gz"):
        export(tmp_path / name, db)
    store = Store(db, readonly=True)
    sql, args = _export_query(None, None, False)
    want = "".join(_encoder_line(r) for r in store.db.execute(sql, args))
    store.close()
    plain = (tmp_path / "out.jsonl").read_text()
    assert plain.split("\n", 1)[1] == want
    assert gzip.decompress((tmp_path / "out.jsonl.gz").read_bytes()).decode() == plain


@pytest.mark.parametrize("batch, group_max", [(20_000, 4096), (1, 4096), (1, 0)])
def test_merging_into_a_database_with_records_sees_every_earlier_record(tmp_path, monkeypatch, batch, group_max):
    """Into a table with rows, stored records are read a group at a time (or, for a group too
    large, one key at a time) while earlier records of the same import sit in the batch, in the
    writer thread, or already in the database: each later duplicate is weighed against the right one."""
    from tunesvc.cache import exchange

    monkeypatch.setattr(exchange, "_BATCH", batch)
    monkeypatch.setattr(exchange, "_GROUP_MAX", group_max)
    c0, c1 = (dict(c) for c in valid_configs((64, 64, 64), 2))

    def line(config, t):
        return _record_line(config=config, time_median=t, time_min=t, time_max=t)

    stored = Record(CPU, "matmul", templates.get("matmul").source_hash, "float32", (64, 64, 64),
                    Measurement(valid_configs((64, 64, 64), 1)[0], "ok", timing=Timing(2e-3, 2e-3, 2e-3, 0.0, 3),
                                gflops=1.0, gbps=1.0), source="colleague.jsonl")  # not 'local': keep-fastest may replace it
    dst = _db(tmp_path / "dst.db", [stored])
    device = {k: v for k, v in zip(("backend", "vendor", "device_type", "architecture", "device_name", "driver"),
                                   CPU.key.split("|"))}
    lines = [dict(line(c, t), **device) for c, t in ((c0, 1e-3), (c1, 5e-3), (c1, 4e-3), (c0, 3e-3), (c1, 6e-3))]
    s = import_files([_write(tmp_path / "in.jsonl", lines)], dst)
    assert (s.added, s.replaced, sum(s.skipped.values())) == (1, 2, 2)
    times = {r.measurement.config: r.measurement.time for r in Store(dst, readonly=True).records()}
    assert times == {valid_configs((64, 64, 64), 2)[0]: 1e-3, valid_configs((64, 64, 64), 2)[1]: 4e-3}
