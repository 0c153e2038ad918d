"""Property-based fuzz of the import path (hypothesis): whatever a file holds, an import either
rejects records one by one with a reason or fails with ImportFileError, and on failure the
database file is byte-for-byte what it was. The same for Kernel Tuner and T4 files, the shape
parsers and the command line's options: no traceback, exit code 0 or 2.

``TUNESVC_FUZZ_EXAMPLES`` sets the examples per test (60 here; benchmarks/import_worst.py runs more)."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
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

EXAMPLES = int(os.environ.get("TUNESVC_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
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


# ---- Kernel Tuner and T4 files --------------------------------------------------------------------
def _same(a, b) -> bool:
    """Equal JSON values (NaN equal to itself, 1 and 1.0 and True told apart)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@FUZZ
@given(members=st.dictionaries(st.text(max_size=6), json_values, max_size=6), streamed=st.sampled_from(["", "s"]),
       inner=st.one_of(st.dictionaries(st.text(max_size=6), json_values, max_size=8), st.lists(json_values, max_size=8)),
       block=st.integers(1, 64), spaces=st.sampled_from(["", " ", "\n  "]))
def test_the_stream_reader_reads_what_json_loads_reads(members, streamed, inner, block, spaces):
    """Whatever an object holds, and wherever the blocks split it, the streamed reader gives its members
    (and a streamed member's elements) as json.loads does."""
    from tunesvc.replay import stream

    data = dict(members, s=inner)
    text = json.dumps(data, indent=1 if spaces else None).replace("\n", spaces or "\n")
    saved, stream._BLOCK = stream._BLOCK, block
    try:
        events = list(stream.members(io.BytesIO(text.encode()), frozenset(streamed) if streamed else frozenset()))
    finally:
        stream._BLOCK = saved
    got, elements = {}, None
    for key, name, value in events:
        if name is None:
            got[key] = value
        else:
            elements = elements if elements is not None else ({} if isinstance(name, str) else [])
            if isinstance(elements, dict):
                elements[name] = value
            else:
                elements.append(value)
    if elements is not None:
        got["s"] = elements
    assert _same(got, json.loads(text))


@FUZZ
@given(data=st.binary(max_size=2000), block=st.integers(1, 64))
def test_the_stream_reader_fails_only_with_its_error(data, block):
    from tunesvc.replay import stream

    saved, stream._BLOCK = stream._BLOCK, block
    try:
        list(stream.members(io.BytesIO(b"{" + data), frozenset({"cache", "results"})))
    except stream.JSONStreamError as e:
        assert str(e) and "\n" not in str(e)
    finally:
        stream._BLOCK = saved


@settings(max_examples=EXAMPLES * 4, deadline=None)
@given(body=st.text(alphabet='{}[]":,.0123456789 \n\\aetrulsfnNI-+\x01\u00e9', max_size=60), block=st.integers(1, 16))
def test_the_stream_reader_accepts_exactly_what_json_loads_accepts(body, block):
    """Near-JSON text: where json.loads reads an object the reader reads the same members, and where
    it refuses the text the reader refuses it too (nothing streamed: that is where they may differ)."""
    from tunesvc.replay import stream

    text = "{" + body
    try:
        want = json.loads(text)
    except (ValueError, RecursionError):
        want = None
    saved, stream._BLOCK = stream._BLOCK, block
    try:
        got = {key: value for key, _, value in stream.members(io.BytesIO(text.encode()))}
    except stream.JSONStreamError:
        got = None
    finally:
        stream._BLOCK = saved
    assert (got is None) == (not isinstance(want, dict)), (text, want, got)
    if got is not None:
        assert _same(got, want)


def _recorded_base(kind: str) -> dict:
    from db_helpers import valid_configs

    from tunesvc import templates

    tpl = templates.get("matmul")
    configs = valid_configs((64, 64, 64), 3)
    if kind == "t4":
        return {"metadata": {"timeunit": "milliseconds"}, "results": [
            {"configuration": dict(c), "invalidity": "correct", "measurements": [{"name": "time", "value": 1.0 + i}],
             "objectives": ["time"], "times": {"runtimes": [1.0 + i], "compilation": 3.0}} for i, c in enumerate(configs)]}
    return {"device_name": "NVIDIA A100", "kernel_name": "matmul", "problem_size": [64, 64, 64],
            "tune_params_keys": [p.name for p in tpl.params], "tune_params": {p.name: list(p.values) for p in tpl.params},
            "cache": {str(i): {**dict(c), "time": 1.0 + i, "times": [1.0 + i], "compile_time": 2.0}
                      for i, c in enumerate(configs)}}


def _replace_somewhere(data, path: list, value):
    """``data`` with the value at ``path`` (keys and indices, followed while they lead somewhere) replaced."""
    if not path or not isinstance(data, (dict, list)) or not data:
        return value
    if isinstance(data, dict):
        key = list(data)[path[0] % len(data)] if isinstance(path[0], int) else path[0]
        return {**data, key: _replace_somewhere(data.get(key), path[1:], value)}
    i = path[0] % len(data) if isinstance(path[0], int) else 0
    return data[:i] + [_replace_somewhere(data[i], path[1:], value)] + data[i + 1:]


@FUZZ
@given(kind=st.sampled_from(["kerneltuner", "t4"]), path=st.lists(st.integers(0, 50) | st.text(max_size=6), max_size=4),
       value=json_values, gz=st.booleans())
def test_recorded_files_with_anything_anywhere(seed_files, kind, path, value, gz):
    """A Kernel Tuner or T4 file with any value at any place: replay's loader gives a space or one line,
    an import rejects records one by one or refuses the file, and a refused import changes nothing."""
    from tunesvc.replay.files import load

    folder, _, _ = seed_files
    text = json.dumps(_replace_somewhere(_recorded_base(kind), path, value))  # NaN and Infinity as a careless writer writes them
    work = Path(tempfile.mkdtemp(dir=folder))
    recorded = work / ("r.json.gz" if gz else "r.json")
    recorded.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    try:
        space = load(recorded)
        assert all(c.time is None or (math.isfinite(c.time) and c.time > 0) for c in space.configs)
    except ImportFileError as e:
        assert str(e) and "\n" not in str(e)
    db = work / "t.db"
    shutil.copy(folder / "base.db", db)
    before = file_digest(db)
    try:
        summary = import_files([recorded], db)
    except ImportFileError as e:
        assert str(e) and "\n" not in str(e) and file_digest(db) == before
        return
    if not summary.added and not summary.replaced:
        assert file_digest(db) == before


@FUZZ
@given(data=st.binary(max_size=3000))
def test_arbitrary_bytes_as_a_recorded_file(seed_files, data):
    from tunesvc.replay.files import load

    folder, _, _ = seed_files
    work = Path(tempfile.mkdtemp(dir=folder))
    path = work / "r.json"
    path.write_bytes(b'{"cache": ' + data)
    with pytest.raises(ImportFileError):
        load(path)
    summary, unchanged, _ = _attempt(folder, b'{"results": [' + data, "r.json")
    assert summary is not None or unchanged


# ---- the shape parsers --------------------------------------------------------------------------
@settings(max_examples=EXAMPLES * 4, deadline=None)
@given(name=st.sampled_from(["matmul", "reduce_sum", "reduce_max", "attention", "attention_causal", "gemv_q"]),
       text=st.one_of(st.text(max_size=40), st.from_regex(r"-?[0-9]{1,30}(x-?[0-9]{0,30}){0,5}", fullmatch=True),
                      st.lists(st.integers(-10, 10**30), max_size=6).map(lambda v: "x".join(map(str, v)))))
def test_shape_parsers_take_a_shape_or_say_why_in_one_line(name, text):
    from tunesvc import templates
    from tunesvc.errors import UsageError

    tpl = templates.get(name)
    try:
        shape = tpl.parse_shape(text)
    except UsageError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(shape, tuple) and all(type(d) is int and d >= 1 for d in shape)


# ---- the command line's options -------------------------------------------------------------------
_texts = st.one_of(st.text(max_size=30), st.integers(-(10**20), 10**20).map(str), st.sampled_from(
    ["0", "-1", "nan", "inf", "1e300", "\x1b]0;t\x07", "\ud800", "local", "a|b", "x" * 5000 + ".py"]))
_COMMANDS = {
    "show": [["--limit"], ["--status"], ["--template"], ["--device"]],
    "lookup": [["--shape"], ["--dtype"], ["TEMPLATE"]],
    "export": [["--device"], ["--template"]],
    "import": [["--source"], ["--policy"]],
    "replay": [["--budget"], ["--repeats"], ["--seed"], ["--strategy"]],
}


@settings(max_examples=EXAMPLES * 4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])
@given(command=st.sampled_from(sorted(_COMMANDS)), data=st.data())
def test_command_line_options_of_anything(seed_files, command, data):
    """Any value for any option of the commands that read and write databases: exit code 0 or 2 and no
    traceback; a command that exits 2 leaves the database as it was."""
    from click.testing import CliRunner

    from tunesvc.cli import main

    folder, plain, _ = seed_files
    work = Path(tempfile.mkdtemp(dir=folder))
    db = work / "t.db"
    shutil.copy(folder / "base.db", db)
    before = file_digest(db)
    options = data.draw(st.lists(st.sampled_from(_COMMANDS[command]), min_size=1, max_size=3, unique_by=str))
    given_values = {o[0]: data.draw(_texts) for o in options}
    args = _command_args(command, given_values, plain, work)
    r = CliRunner().invoke(main, args, env={"TUNESVC_DB": str(db), "TUNESVC_SHIPPED_DB": str(work / "none")})
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
    assert r.exit_code in (0, 2), (args, r.output[-500:])
    if r.exit_code == 2:
        assert file_digest(db) == before


def _command_args(command: str, values: dict, plain: Path, work: Path) -> list[str]:
    """The command's arguments with the drawn option values (and defaults for what it needs)."""
    kt = str(Path(__file__).parent / "data" / "pnpoly_RTX_3090_small.json.gz")
    template = values.pop("TEMPLATE", "matmul")
    head = {"show": ["show"], "export": ["export", str(work / "out.jsonl")], "import": ["import", str(plain)],
            "lookup": ["lookup", template, "--device", CPU.key], "replay": ["replay", kt]}[command]
    if command == "lookup":
        values.setdefault("--shape", "64x64x64")
    if command == "replay":
        values.setdefault("--strategy", "no-such-strategy")  # a real one would run whole searches
        values["--repeats"] = values.get("--repeats", "1")
    return head + [a for k, v in values.items() for a in (k, v)]
