"""Property-based fuzz of the import path (hypothesis): whatever a file holds, an import either
rejects records one by one with a reason or fails with ImportFileError, and on failure the
database file is byte-for-byte what it was."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from db_helpers import CPU, GPU, file_digest, make_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesvc.cache import Store
from tunesvc.cache.exchange import FORMAT, export, import_files
from tunesvc.errors import ImportFileError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HEADER = json.dumps({"format": FORMAT, "format_version": 1, "tunesvc_version": "0.1.0", "created_at": "2025-01-01T00:00:00+00:00"})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def seed_files():
    """A base database and a valid export of it (plain and gzip)."""
    folder = Path(tempfile.mkdtemp(prefix="tunesvc-fuzz-"))
    store = Store(folder / "base.db")
    store.put_many(make_records(CPU, n=3) + make_records(GPU, shapes=((128, 128, 128),), n=2))
    store.close()
    plain = export(folder / "valid.jsonl", folder / "base.db").path
    gz = export(folder / "valid.jsonl.gz", folder / "base.db").path
    yield folder, Path(plain), Path(gz)
    shutil.rmtree(folder, ignore_errors=True)


def _valid_records(plain: Path) -> list[dict]:
    return [json.loads(line) for line in plain.read_text().splitlines()[1:]]


def _attempt(folder: Path, data: bytes, name: str = "fuzz.jsonl"):
    """Import ``data`` into a fresh copy of the base database: (summary or None, db unchanged?, db)."""
    work = Path(tempfile.mkdtemp(dir=folder))
    db = work / "t.db"
    shutil.copy(folder / "base.db", db)
    before = file_digest(db)
    path = work / name
    path.write_bytes(data)
    try:
        summary = import_files([path], db)
    except ImportFileError as e:
        assert str(e) and "\n" not in str(e)
        return None, file_digest(db) == before, db
    return summary, None, db


@FUZZ
@given(data=st.binary(max_size=3000))
def test_arbitrary_bytes(seed_files, data):
    folder, _, _ = seed_files
    summary, unchanged, _ = _attempt(folder, data)
    assert summary is None and unchanged  # without a header, nothing is an export


@FUZZ
@given(body=st.binary(max_size=3000))
def test_arbitrary_bytes_after_a_valid_header(seed_files, body):
    folder, _, _ = seed_files
    summary, _, _ = _attempt(folder, HEADER.encode() + b"\n" + body)
    assert summary is not None and summary.added == 0 and summary.replaced == 0


@FUZZ
@given(field=st.sampled_from(["template", "template_hash", "dtype", "shape", "backend", "vendor", "device_type",
                              "architecture", "device_name", "driver", "config", "status", "reason", "time_median",
                              "time_min", "time_max", "time_iqr", "runs", "gflops", "gbps", "compile_seconds",
                              "created_at", "tunesvc_version", "source", "extra"]),
       value=json_values, index=st.integers(0, 7))
def test_one_field_replaced_by_anything(seed_files, field, value, index):
    folder, plain, _ = seed_files
    records = _valid_records(plain)
    record = dict(records[index % len(records)], **{field: value})
    text = json.dumps(record)  # NaN and Infinity come out as bare words, as a careless writer would write them
    summary, _, db = _attempt(folder, f"{HEADER}\n{text}\n".encode())
    assert summary is not None and summary.read == 1
    if summary.rejected:
        assert all(reason for reason in summary.rejected)
    else:  # accepted: what was stored must survive a round trip through export and import
        again = import_files([export(db.parent / "re.jsonl", db).path], db.parent / "fresh.db")
        assert not again.rejected


@FUZZ
@given(cut=st.floats(0.0, 1.0), gz=st.booleans())
def test_truncated_files(seed_files, cut, gz):
    folder, plain, zipped = seed_files
    data = (zipped if gz else plain).read_bytes()
    part = data[: int(len(data) * cut)]
    summary, unchanged, _ = _attempt(folder, part, "cut.jsonl.gz" if gz else "cut.jsonl")
    if summary is None:
        assert unchanged
    else:
        assert summary.read <= len(_valid_records(plain))


@FUZZ
@given(depth=st.integers(1, 200_000), kind=st.sampled_from(["[", '{"a":']), width=st.integers(0, 300_000))
def test_deep_nesting_and_enormous_lines(seed_files, depth, kind, width):
    folder, _, _ = seed_files
    deep = kind * depth
    long = '{"reason": "' + "x" * width + '"}'
    summary, _, _ = _attempt(folder, f"{HEADER}\n{deep}\n{long}\n".encode())
    assert summary is not None and summary.read == 2 and sum(summary.rejected.values()) == 2


@FUZZ
@given(position=st.floats(0.0, 1.0), junk=st.binary(min_size=1, max_size=64))
def test_junk_spliced_into_a_gzip_export(seed_files, position, junk):
    folder, _, zipped = seed_files
    data = zipped.read_bytes()
    at = int(len(data) * position)
    summary, unchanged, _ = _attempt(folder, data[:at] + junk + data[at:], "junk.jsonl.gz")
    if summary is None:
        assert unchanged


def test_sqlite_and_gzip_of_a_sqlite_file(seed_files):
    folder, _, _ = seed_files
    raw = (folder / "base.db").read_bytes()
    for data, name in ((raw, "db.jsonl"), (gzip.compress(raw), "db.jsonl.gz")):
        summary, unchanged, _ = _attempt(folder, data, name)
        assert summary is None and unchanged


# ---- the fast import path agrees with the strict one --------------------------------------
@FUZZ
@given(field=st.sampled_from(["template", "dtype", "shape", "device_name", "config", "status", "reason", "time_median",
                              "time_min", "runs", "gflops", "compile_seconds", "created_at", "tunesvc_version", "extra"]),
       value=json_values, index=st.integers(0, 7), duplicate=st.booleans())
def test_fast_path_accepts_only_what_the_strict_path_accepts_alike(seed_files, field, value, index, duplicate):
    """Whatever a record holds (duplicate keys, NaN, huge integers, nesting), a row from the fast path
    (orjson, memoised checks) is exactly the strict parser's row; any other line takes the strict path."""
    from tunesvc.cache.exchange import _fast
    from tunesvc.cache.validate import Checks, Rejected, parse_line, validate

    folder, plain, _ = seed_files
    records = _valid_records(plain)
    warm = Checks()
    for r in records:  # the memos hold the valid records' contexts, as in the middle of a real import
        assert _fast(json.dumps(r, separators=(",", ":")).encode(), warm) is not None
    record = dict(records[index % len(records)], **{field: value})
    text = json.dumps(record)
    if duplicate:  # the same key again, with the original value last
        text = text[:-1] + f", {json.dumps(field)}: {json.dumps(records[index % len(records)].get(field))}}}"
    try:
        strict = validate(parse_line(text), Checks())
    except Rejected:
        strict = None
    fast = _fast(text.encode(), warm)
    if fast is not None:  # equal values of equal types (5 == 5.0 in Python)
        assert fast == strict and {k: type(v) for k, v in fast.items()} == {k: type(v) for k, v in strict.items()}


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
       block=st.integers(1, 50), max_line=st.integers(1, 30), newline_last=st.booleans())
def test_block_reader_keeps_line_numbers_and_limits(lines, block, max_line, newline_last):
    import io

    from tunesvc.cache import validate

    data = b"\n".join(lines) + (b"\n" if newline_last and lines else b"")
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    want = [(i + 1, p if len(p) <= max_line else "too long") for i, p in enumerate(parts)]
    saved, validate._BLOCK = validate._BLOCK, block
    try:
        got = [(n, "too long" if isinstance(r, validate.Rejected) else r)
               for n, r in validate.read_raw_lines(io.BytesIO(data), max_line)]
    finally:
        validate._BLOCK = saved
    assert got == want
