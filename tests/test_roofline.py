"""Roofline ceilings: measured on the real OpenCL device, stored with it, shown by the CLI,
and the fraction of the bounding ceiling in the tune summary and in show."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from click.testing import CliRunner

from tunesvc import roofline, templates
from tunesvc.cache import Store
from tunesvc.cli import main

SMALL_COPY = 32 * 2**20  # keeps the test fast; the real probe copies 512 MiB per buffer


@pytest.fixture
def small_probe(monkeypatch):
    monkeypatch.setattr(roofline, "COPY_BYTES", SMALL_COPY)


def test_fma_probe_computes_the_rotating_chains(cl_device):
    """The FMA kernel does the work it is credited with (CHAINS x ITERS multiply-adds per
    work-item, each chain also adding its neighbour) and its values stay finite, so no
    step runs on infinities or is left out by the compiler."""
    import numpy as np

    from tunesvc.templates.base import Launch, prelude

    program = cl_device.build(prelude(cl_device.dialect) + roofline.PROBE_SOURCE,
                              {"CHAINS": roofline.FMA_CHAINS, "ITERS": roofline.FMA_ITERS}, ("ts_copy", "ts_fma"))
    items = 64
    seed, out = cl_device.alloc(8), cl_device.alloc(items * 4)
    cl_device.write(seed, np.array([0.5, 0.0], dtype=np.float32))
    cl_device.run(program, (Launch("ts_fma", (items,), (items,), ("seed", "out")),), {"seed": seed, "out": out})
    got = np.empty(items, dtype=np.float32)
    cl_device.read(out, got)
    acc = (np.arange(items)[:, None] + np.arange(roofline.FMA_CHAINS)[None, :]).astype(np.float64) * 1e-7
    for _ in range(roofline.FMA_ITERS):
        acc = acc * 0.5 + np.roll(acc, -1, axis=1)
    want = acc.sum(axis=1)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_probe_measures_positive_ceilings_and_stores_them(cl_device, db_path):
    store = Store(db_path)
    c = roofline.measure_and_store(store, cl_device, SMALL_COPY)
    assert math.isfinite(c.gbps) and c.gbps > 0.1
    assert math.isfinite(c.gflops) and c.gflops > 0.1
    assert c.details["copy_bytes"] == 2 * SMALL_COPY
    back = roofline.stored(store, cl_device.info.fingerprint.key)
    assert (back.gbps, back.gflops) == (c.gbps, c.gflops)
    assert back.details["fma_chains"] == roofline.FMA_CHAINS
    assert roofline.stored(store, "opencl|x|cpu|y|z|w") is None


def test_fraction_uses_the_bound_of_the_shape():
    c = roofline.Ceilings(gbps=10.0, gflops=100.0)
    att = templates.get("attention")
    assert roofline.fraction(att, (1, 8, 1, 4096, 128), gflops=1.0, gbps=5.0, ceilings=c) == ("bandwidth", 0.5)
    assert roofline.fraction(att, (1, 8, 512, 512, 64), gflops=25.0, gbps=1.0, ceilings=c) == ("flops", 0.25)
    assert roofline.fraction(templates.get("reduce_sum"), (4, 4), gflops=1.0, gbps=2.0, ceilings=c) == ("bandwidth", 0.2)
    assert roofline.fraction(templates.get("matmul"), (8, 8, 8), gflops=50.0, gbps=2.0, ceilings=c) == ("flops", 0.5)
    assert roofline.fraction(att, (1, 1, 1, 8, 8), 1.0, 1.0, None) is None


def test_old_database_without_the_ceilings_table(db_path, cl_info):
    Store(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TABLE ceilings")
    assert Store(db_path, readonly=True).ceilings(cl_info.fingerprint.key) is None
    assert Store(db_path).ceilings(cl_info.fingerprint.key) is None  # a writer adds the table back


def test_cli_devices_probe_then_shows_stored(db_path, small_probe):
    r = CliRunner().invoke(main, ["devices", "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "not measured (run 'tunesvc devices --probe')" in r.output
    r = CliRunner().invoke(main, ["devices", "--probe", "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "roofline ceilings: copy bandwidth" in r.output and "GFLOP/s" in r.output
    r = CliRunner().invoke(main, ["devices", "--json", "--db", str(db_path)])
    data = json.loads(r.output)
    ceil = next(d for d in data["devices"] if d["default"])["ceilings"]
    assert ceil["gbps"] > 0 and ceil["gflops"] > 0


def test_tune_summary_and_show_print_the_fraction(db_path, cl_device, small_probe):
    runner = CliRunner()
    args = ["tune", "reduce_sum", "--shape", "64x1000", "--trials", "2", "--seed", "0", "--db", str(db_path)]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "roofline" not in r.output  # no ceilings yet: nothing to compare with
    roofline.measure_and_store(Store(db_path), cl_device, SMALL_COPY)
    r = runner.invoke(main, args[:4] + ["--trials", "1", "--seed", "1", "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "roofline: " in r.output and "bandwidth ceiling" in r.output
    r = runner.invoke(main, ["show", "--db", str(db_path), "--template", "reduce_sum"])
    assert r.exit_code == 0, r.output
    assert "roofline" in r.output.splitlines()[0]
    assert "% BW" in r.output
    rows = json.loads(runner.invoke(main, ["show", "--db", str(db_path), "--json"]).output)
    assert all(0 < row["roofline_fraction"] for row in rows if row["status"] == "ok")
