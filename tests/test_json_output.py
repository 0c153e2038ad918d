"""Machine output: every --json document starts with schema_version, holds numbers as numbers with
their units in the key names, and an export validates line by line against docs/export.schema.json."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from db_helpers import CPU, make_records, valid_configs

from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cli import main
from tunesvc.types import STATUSES, Measurement, Record

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "export.schema.json").read_text())
KT = Path(__file__).parent / "data" / "pnpoly_RTX_3090_small.json.gz"
#: a display string where a number belongs: '11.1 us', '47.42', '93%', 'ok (stale)'
_DISPLAY = re.compile(r"^-?[0-9.]+ ?(?:us|ms|s|%|GFLOP/s|GB/s)$|^-?[0-9]+\.[0-9]+$|\(stale\)$")
#: string fields whose values may look like numbers (a 1-D shape is '4096')
_TEXT_KEYS = {"shape", "tuned_shape", "id", "version", "c_version", "driver", "name", "device_name", "tunesvc_version"}


@pytest.fixture(scope="module")
def db(tmp_path_factory, cl_info):
    """A database with a real tuning run on this machine's OpenCL device, stored records of a second
    device and failed configs of every kind."""
    path = tmp_path_factory.mktemp("json") / "t.db"
    runner = CliRunner()
    r = runner.invoke(main, ["tune", "matmul", "--shape", "16x16x16", "--trials", "3", "--seed", "1", "--device", cl_info.id,
                             "--db", str(path), "--json"])
    assert r.exit_code == 0, r.output
    store = Store(path)
    tpl = templates.get("matmul")
    records = make_records(CPU, shapes=((64, 64, 64),), n=3)
    for status, config in zip(STATUSES[1:], valid_configs((32, 32, 32), len(STATUSES) - 1)):
        m = Measurement(config, status, f"{status}: a reason with \x1b escapes")
        records.append(Record(CPU, tpl.name, tpl.source_hash, "float32", (32, 32, 32), m, "2025-01-01T00:00:00+00:00",
                              "0.1.0", "local"))
    store.put_many(records)
    store.close()
    return path


def _run(*args) -> dict:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert isinstance(doc, dict) and doc["schema_version"] == 1, doc
    _no_display_strings(doc)
    return doc


def _no_display_strings(value, key: str = "") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _no_display_strings(v, k)
    elif isinstance(value, list):
        for v in value:
            _no_display_strings(v, key)
    elif isinstance(value, str) and key not in _TEXT_KEYS and key != "config":
        assert not _DISPLAY.search(value), f"{key}: {value!r} is a display string"


def _number_or_none(*values) -> bool:
    return all(v is None or type(v) in (int, float) for v in values)


def test_show(db):
    doc = _run("show", "--db", db, "--limit", 0, "--json")
    rows = doc["records"]
    assert len(rows) >= 3 + 3 + len(STATUSES) - 1
    assert {row["status"] for row in rows} == set(STATUSES)
    for row in rows:
        assert _number_or_none(row["time_s"], row["time_min_s"], row["time_max_s"], row["time_iqr_s"], row["gflops"],
                               row["gbps"], row["compile_s"], row["roofline_fraction"])
        assert isinstance(row["config"], dict) and type(row["runs"]) is int and type(row["stale"]) is bool
        assert (row["time_s"] is not None) == (row["status"] == "ok")
    ok = [row for row in rows if row["status"] == "ok"]
    assert all(row["time_s"] > 0 and row["gflops"] > 0 for row in ok)


def test_show_keeps_its_table(db):
    r = CliRunner().invoke(main, ["show", "--db", str(db)])
    header = r.output.splitlines()[0].split()
    assert header == ["template", "device", "dtype", "shape", "status", "time", "gflops", "roofline", "config", "reason"]
    assert re.search(r" (us|ms) ", r.output) and "\x1b" not in r.output


def test_lookup(db, cl_info):
    doc = _run("lookup", "matmul", "--shape", "16x16x16", "--device", cl_info.id, "--db", db, "--json")
    assert doc["level"] == "exact" and doc["time_s"] > 0 and doc["gflops"] > 0 and isinstance(doc["params"], dict)


def test_export_import_replay_devices(db, tmp_path):
    doc = _run("export", tmp_path / "out.jsonl", "--db", db, "--json")
    assert doc["records"] > 0 and type(doc["bytes"]) is int
    doc = _run("import", tmp_path / "out.jsonl", "--db", tmp_path / "copy.db", "--json")
    assert doc["added"] == _run("export", tmp_path / "again.jsonl", "--db", db, "--json")["records"]
    doc = _run("replay", KT, "--strategy", "random", "--budget", 5, "--repeats", 1, "--json")
    assert doc["reports"][0]["optimum_s"] > 0 and all(t > 0 for t in doc["reports"][0]["run_times_s"][0])
    doc = _run("devices", "--db", db, "--json")
    assert doc["devices"] and all(type(d["global_mem_size"]) is int for d in doc["devices"])


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_an_export_validates_against_its_schema(db, tmp_path, name):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    out = tmp_path / name
    _run("export", out, "--db", db, "--json")
    data = gzip.decompress(out.read_bytes()) if name.endswith(".gz") else out.read_bytes()
    lines = [json.loads(line) for line in data.decode().splitlines()]
    for line in lines:
        validator.validate(line)
    assert "format" in lines[0] and {line["status"] for line in lines[1:]} == set(STATUSES)


def test_the_schema_refuses_what_the_importer_refuses(db, tmp_path):
    validator = jsonschema.Draft202012Validator(SCHEMA)
    out = tmp_path / "out.jsonl"
    _run("export", out, "--db", db, "--json")
    header, record = (json.loads(line) for line in out.read_text().splitlines()[:2])
    assert record["status"] == "ok"
    for bad in ({**record, "time_median": "11.1 us"}, {**record, "time_median": None}, {**record, "status": "ok (stale)"},
                {**record, "gflops": "47.42"}, {**record, "shape": "16 x 16"}, {**record, "runs": 0},
                {k: v for k, v in record.items() if k != "config"}, {**header, "format_version": 2}):
        assert not validator.is_valid(bad), bad
