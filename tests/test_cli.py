"""The CLI through click's CliRunner: real device, real database, bad input included."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tunesvc.cli import main


@pytest.fixture
def run(db_path):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_devices_lists_the_opencl_device_with_its_properties(run, cl_info):
    r = run("devices")
    assert r.exit_code == 0
    assert cl_info.id in r.output and cl_info.name in r.output and "(default)" in r.output
    for word in ("compute units", "max work-group", "local memory", "preferred float vector width", "fp16", "fp64", "driver"):
        assert word in r.output
    assert "cuda:" in r.output  # says why no CUDA device is listed, or lists them


def test_devices_json(run, cl_info):
    r = run("devices", "--json")
    data = json.loads(r.output)
    dev = next(d for d in data["devices"] if d["id"] == cl_info.id)
    assert dev["fingerprint"]["backend"] == "opencl"
    assert {"compute_units", "max_work_group_size", "local_mem_size", "local_mem_type", "fp16", "fp64",
            "preferred_vector_width_float", "c_version"} <= set(dev)


def test_tune_then_lookup_then_show(run, db_path, cl_info):
    r = run("tune", "matmul", "--shape", "48x40x24", "--trials", 3, "--strategy", "grid", "--device", cl_info.id)
    assert r.exit_code == 0, r.output
    assert "best:" in r.output and "GFLOP/s" in r.output and "speedup over the default" in r.output
    assert "numpy" not in r.output  # one short numpy timing swung 0.5-199 GFLOP/s: the benchmarks measure it properly

    r = run("lookup", "matmul", "--shape", "48x40x24", "--device", cl_info.id, "--json")
    data = json.loads(r.output)
    assert data["level"] == "exact" and data["params"] and data["gflops"] > 0

    r = run("lookup", "matmul", "--shape", "50x40x24", "--device", cl_info.id, "--explain")
    assert r.exit_code == 0 and "nearest_shape" in r.output and "tuned at 48x40x24" in r.output

    r = run("show", "--template", "matmul")
    assert r.exit_code == 0 and r.output.count("48x40x24") == 3

    rows = json.loads(run("show", "--json").output)["records"]
    assert len(rows) == 3 and all(row["status"] == "ok" for row in rows)


def test_tune_json_summary(run, cl_info):
    r = run("tune", "matmul", "--shape", "16x16x16", "--trials", 2, "--json", "--device", cl_info.id)
    data = json.loads(r.output)
    assert data["trials"] == 2 and data["best"]["gflops"] > 0 and data["status"] == "ok" and data["error"] is None
    assert set(data["best"]["config"]) >= {"MDIM", "NDIM", "KWG", "WPTM", "WPTN", "VW", "LOCAL", "UNROLL"}


@pytest.mark.parametrize("args, words", [
    (["tune", "nosuch", "--shape", "4x4x4"], "unknown template"),
    (["tune", "matmul", "--shape", "12x"], "MxNxK"),
    (["tune", "matmul", "--shape", "0x4x4"], "must be >= 1"),
    (["tune", "matmul", "--shape", "-1x2x3"], "must be >= 1"),
    (["tune", "matmul", "--shape", "axbxc"], "MxNxK"),
    (["tune", "matmul", "--shape", "100000x100000x100000"], "smaller shape"),
    (["tune", "matmul", "--shape", "4x4x4", "--dtype", "int8"], "unknown dtype"),
    (["tune", "matmul", "--shape", "4x4x4", "--device", "quantum"], "no device matches"),
    (["tune", "matmul", "--shape", "4x4x4", "--strategy", "magic"], "unknown strategy"),
    (["tune", "matmul", "--shape", "4x4x4", "--trials", "0"], "--trials"),
    (["lookup", "matmul", "--shape", "4x4"], "dimension"),
    (["lookup", "nosuch", "--shape", "4x4x4"], "unknown template"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_the_database_alone(run, db_path, args, words):
    before = db_path.read_bytes() if db_path.exists() else None
    r = run(*args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith("tuning ")]
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("Error:")
    after = db_path.read_bytes() if db_path.exists() else None
    assert before == after


def test_float16_on_a_device_without_it_is_a_usage_error(run, cl_no_fp16):
    r = run("tune", "matmul", "--shape", "4x4x4", "--dtype", "float16", "--device", cl_no_fp16.id)
    assert r.exit_code == 2 and "float16" in r.output


def test_show_on_a_missing_database_says_how_to_fix(run, tmp_path):
    r = run("show", "--db", tmp_path / "nothing.db")
    assert r.exit_code == 2 and "tune something first" in r.output
