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
    assert "best so far" in svg and "random search (expected)" in svg and "wall time since the first measurement (s)" in svg
    assert f"saxpy 4099 float32 on {cl_info.name}" in svg and n > 10


def test_wall_time_counts_from_the_first_measurement_in_the_order_of_the_stamps():
    """A leader measured again at the end is stamped last: by time it counts there, never before 0."""
    from tunesvc.report.plots import Trial, convergence_series

    trials = [Trial(3.0, "2026-01-01T00:00:09+00:00"), Trial(5.0, "2026-01-01T00:00:01+00:00"),
              Trial(None, "2026-01-01T00:00:02+00:00"), Trial(4.0, "2026-01-01T00:00:05+00:00")]
    index, by_index, seconds, by_seconds = convergence_series(trials)
    assert index == [1, 2, 3, 4] and by_index == [3.0, 3.0, 3.0, 3.0]
    assert seconds == [0.0, 1.0, 4.0, 8.0] and by_seconds == [5.0, 5.0, 4.0, 3.0]


def test_convergence_follows_the_study_of_a_real_tune(tmp_path, cl_info, monkeypatch):
    """After a real tune the plot reads the Optuna study beside the database: its trials, in order."""
    import optuna

    from tunesvc import tune
    from tunesvc.cli.plot import _study_trials
    from tunesvc.tuning.tuner import resolve

    monkeypatch.setenv("TUNESVC_CACHE_DIR", str(tmp_path / "cache"))
    db = tmp_path / "t.db"
    tune(EXAMPLE, (4099,), "float32", cl_info, db=db, trials=5, seed=3)
    problem = resolve(EXAMPLE, "4099", "float32", cl_info.id).problem
    trials = _study_trials(problem, db)
    studies = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 't.optuna.db'}")
    assert trials is not None and len(trials) == studies[0].n_trials >= 5
    assert all(t.time is None or t.time > 0 for t in trials)
    assert min(convergence_series_seconds(trials)) == 0.0
    r = run("convergence", EXAMPLE, "--shape", "4099", "--db", db, "-o", tmp_path / "c.png")
    assert r.exit_code == 0, r.output


def convergence_series_seconds(trials):
    from tunesvc.report.plots import convergence_series

    return convergence_series(trials)[2]


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
