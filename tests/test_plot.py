"""tunesvc plot: files written from a real database, opened and read back (text of the SVG,
pixels of the PNG), not only found to exist."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from db_helpers import CPU, GPU, make_records

from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cli import main
from tunesvc.templates.base import Context
from tunesvc.types import Measurement, Record, Timing

pytest.importorskip("matplotlib", reason="pip install 'tunesvc[plot]'")
EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "saxpy.py")


def run(*args):
    return CliRunner().invoke(main, ["plot", *map(str, args)])


def whole_space_db(path, info):
    """Every config of saxpy at 4099 measured (times made up), so random search's expectation is known."""
    tpl = templates.get(EXAMPLE)
    configs = [c for c in tpl.all_configs() if tpl.is_valid(c, Context((4099,), "float32", info))]
    store = Store(path)
    store.put_device(info)
    records = []
    for i, c in enumerate(configs):
        t = 1e-4 * (1 + (i * 7919) % len(configs))
        m = Measurement(c, "ok", timing=Timing(t, t, t, 0.0, 3), gflops=2 * 4099 / t * 1e-9, gbps=1.0)
        records.append(Record(info.fingerprint, tpl.name, tpl.source_hash, "float32", (4099,), m,
                              f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00"))
    for r in records:  # one at a time: the order of measurement is the order of the plot
        store.put(r)
    store.close()
    return len(configs)


def test_convergence_svg_shows_best_so_far_and_random_expectation(tmp_path, cl_info):
    db = tmp_path / "t.db"
    n = whole_space_db(db, cl_info)
    out = tmp_path / "c.svg"
    r = run("convergence", EXAMPLE, "--shape", "4099", "--db", db, "-o", out)
    assert r.exit_code == 0, r.output
    svg = out.read_text()
    assert "best so far" in svg and "random search (expected)" in svg and "wall time (s)" in svg
    assert f"saxpy 4099 float32 on {cl_info.name}" in svg and n > 10


def test_convergence_png_has_a_picture(tmp_path, cl_info):
    import matplotlib.image

    db = tmp_path / "t.db"
    whole_space_db(db, cl_info)
    out = tmp_path / "c.png"
    assert run("convergence", EXAMPLE, "--shape", "4099", "--db", db, "-o", out).exit_code == 0
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 800 and np.std(pixels) > 0.05  # drawn, not blank


def test_roofline_and_compare(tmp_path):
    db = tmp_path / "t.db"
    store = Store(db)
    store.put_many(make_records() + make_records(fp=GPU, base=1e-5))
    store.put_ceilings(CPU.key, 20.0, 150.0, "2026-01-01T00:00:00+00:00", {"read_gbps": 30.0, "peak_gflops": 160.0})
    store.close()
    roof = tmp_path / "r.svg"
    r = run("roofline", "--device", CPU.key, "--db", db, "-o", roof)
    assert r.exit_code == 0, r.output
    svg = roof.read_text()
    assert "matmul 64x64x64" in svg and "matmul 256x256x256" in svg and "read 30.0 GB/s" in svg and "physical peak 160.0" in svg
    cmp_ = tmp_path / "cmp.svg"
    r = run("compare", "matmul", "--shape", "64x64x64", "--db", db, "-o", cmp_)
    assert r.exit_code == 0, r.output
    svg = cmp_.read_text()
    assert CPU.name in svg and GPU.name in svg
    assert svg.index(GPU.name) < svg.index(CPU.name)  # fastest first


@pytest.mark.parametrize("args, says", [
    (["compare", "matmul", "--shape", "64x64x64", "-o", "x.pdf"], "must end in .png or .svg"),
    (["roofline", "-o", "x.png"], "no roofline ceilings"),
    (["convergence", "matmul", "--shape", "64x64x64", "-o", "x.png"], "no measurements"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, says):
    db = tmp_path / "t.db"
    store = Store(db)
    store.put_many([dataclasses.replace(r) for r in make_records(shapes=((32, 32, 32),))])
    store.close()
    r = CliRunner().invoke(main, ["plot", *args[:-1], str(tmp_path / args[-1]), "--db", str(db)])
    assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, r.output
