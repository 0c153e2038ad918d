"""The lookup API: exact, nearest shape and default answers; a light import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import tunesvc
from tunesvc.cache import Store
from tunesvc.lookup import clear_cache
from tunesvc.tuning.tuner import tune


@pytest.fixture(scope="module")
def tuned_db(tmp_path_factory, cl_info):
    db = tmp_path_factory.mktemp("lookup") / "t.db"
    tune("matmul", (64, 64, 64), db=db, device=cl_info, strategy="grid", trials=3)
    return db


def test_exact_answer_is_the_fastest_measured_config(tuned_db, cl_info):
    clear_cache()
    res = tunesvc.lookup("matmul", (64, 64, 64), device=cl_info.id, db=tuned_db)
    assert res.level == "exact"
    best = min((r for r in Store(tuned_db).records("matmul") if r.measurement.ok), key=lambda r: r.measurement.time)
    assert res.config == best.config and res.time == best.measurement.time and res.gflops > 0


def test_nearest_shape_answers_an_untuned_shape(tuned_db, cl_info):
    res = tunesvc.lookup("matmul", "70x64x60", device=cl_info.id, db=tuned_db)
    assert res.level == "nearest_shape" and res.tuned_shape == (64, 64, 64)


def test_default_when_nothing_is_known(tmp_path, cl_info):
    res = tunesvc.lookup("matmul", (64, 64, 64), device=cl_info.id, db=tmp_path / "empty.db")
    assert res.level == "default" and res.time is None
    from tunesvc import templates

    assert res.config == templates.get("matmul").default_config()


def test_answers_follow_new_measurements_from_another_writer(tmp_path, cl_info):
    db = tmp_path / "live.db"
    assert tunesvc.lookup("matmul", (32, 32, 32), device=cl_info, db=db).level == "default"
    tune("matmul", (32, 32, 32), db=db, device=cl_info, strategy="grid", trials=2)
    assert tunesvc.lookup("matmul", (32, 32, 32), device=cl_info, db=db).level == "exact"


def test_a_nearest_config_invalid_for_the_shape_is_not_served(tmp_path, cl_info):
    """A config tuned at N=64 with VW=8 cannot run at N=63; lookup must not hand it out."""
    from tunesvc.types import Config, Measurement, Record, Timing
    from tunesvc import templates

    mm = templates.get("matmul")
    cfg = mm.default_config().replace(VW=8, WPTN=8, NDIM=1)
    store = Store(tmp_path / "v.db")
    store.put(Record(cl_info.fingerprint, "matmul", mm.source_hash, "float32", (64, 64, 64),
                     Measurement(cfg, "ok", timing=Timing(1e-4, 1e-4, 1e-4, 0, 5), gflops=5.0)))
    res = tunesvc.lookup("matmul", (64, 63, 64), device=cl_info, db=tmp_path / "v.db")
    assert res.config != cfg and res.level == "default"


def test_lookup_by_device_id_imports_no_optuna_and_no_driver(tuned_db, cl_info):
    code = f"""
import sys, json, tunesvc
assert "optuna" not in sys.modules and "pyopencl" not in sys.modules
res = tunesvc.lookup("matmul", (64, 64, 64), device={cl_info.id!r}, db={str(tuned_db)!r})
print(json.dumps({{"level": res.level, "mods": sorted(m for m in ("optuna", "pyopencl", "pycuda") if m in sys.modules)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got == {"level": "exact", "mods": []}


def test_import_tunesvc_is_light():
    code = "import sys, tunesvc; print(sorted(m for m in ('optuna', 'pyopencl', 'pycuda', 'sqlite_utils', 'click') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_matmul_callable_uses_the_tuned_config_and_is_right(tuned_db, cl_info):
    import numpy as np

    rng = np.random.default_rng(0)
    for m, k, n in [(64, 64, 64), (17, 5, 33), (1, 1, 1)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = tunesvc.matmul(a, b, device=cl_info, db=tuned_db)
        assert c.shape == (m, n) and c.dtype == np.float32
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("a_shape, b_shape, dtype, match", [
    ((3, 4), (5, 6), "float32", "2-D arrays"),
    ((3,), (3, 2), "float32", "2-D arrays"),
    ((0, 4), (4, 2), "float32", "non-empty"),
    ((3, 4), (4, 2), "float64", "float32"),
])
def test_matmul_callable_refuses_bad_arrays(a_shape, b_shape, dtype, match, cl_info):
    import numpy as np

    from tunesvc.errors import UsageError

    with pytest.raises(UsageError, match=match):
        tunesvc.matmul(np.ones(a_shape, dtype), np.ones(b_shape, dtype), device=cl_info)
