"""benchmarks/reference.py: numpy references measured in child processes, natively (the
OpenBLAS pinning variables unset) and pinned (the environment as is). Real numpy, real
children; this process's environment is never changed."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reference.py"
_spec = importlib.util.spec_from_file_location("benchmark_reference", _PATH)
reference = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # dataclasses look their module up
_spec.loader.exec_module(reference)

PINNED = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "2048"}
MATMUL = {"kind": "matmul", "n": 96}


def _openblas() -> bool:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy as np

    np.ones((2, 2)) @ np.ones((2, 2))
    return any(lib.get("internal_api") == "openblas" for lib in threadpoolctl.threadpool_info())


def test_child_env_drops_only_the_pinning_variables():
    base = {**PINNED, "PATH": "/bin", "OPENBLAS_NUM_THREADS": "2"}
    assert reference.child_env("native", base) == {"PATH": "/bin", "OPENBLAS_NUM_THREADS": "2"}
    assert reference.child_env("pinned", base) == base
    with pytest.raises(ValueError, match="mode is one of"):
        reference.child_env("fast", base)


def test_native_child_runs_unpinned_and_names_its_kernel():
    """The native child sees neither variable although its parent's environment has both; the
    pinned child sees them, and OpenBLAS then runs the kernel they name."""
    before = dict(os.environ)
    base = {**os.environ, **PINNED}
    native = reference.measure(MATMUL, "native", reps=3, base_env=base, min_seconds=0)
    pinned = reference.measure(MATMUL, "pinned", reps=3, base_env=base, min_seconds=0)
    assert dict(os.environ) == before
    assert native.ok and pinned.ok, (native.error, pinned.error)
    assert native.pinning == {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}
    assert pinned.pinning == PINNED
    for r in (native, pinned):
        assert r.kernel and r.kernel != "?" and "unknown" not in r.kernel
        assert r.unit == "GFLOP/s" and r.reps >= 3 and 0 < r.median <= r.best and r.threads >= 1
    if _openblas():
        assert pinned.kernel.lower() == "haswell"


def test_both_modes_take_turns_and_pool_their_runs():
    refs = reference.measure_both(MATMUL, reps=2, rounds=2, min_seconds=0)
    assert set(refs) == {"native", "pinned"}
    assert all(r.ok and r.reps >= 4 for r in refs.values())
    assert math.isclose(reference.ratio(refs["native"].median, refs), 1.0)
    lines = reference.summary([refs])
    assert lines[0].startswith("numpy native: OpenBLAS kernel ") and "OPENBLAS_CORETYPE=unset" in lines[0]
    assert lines[1].startswith("numpy pinned: ")


@pytest.mark.parametrize("workload, unit", [
    ({"kind": "reduce", "template": "reduce_sumsq", "shape": [8, 4096]}, "GB/s"),
    ({"kind": "attention", "template": "attention_causal", "shape": [1, 2, 16, 32, 8]}, "GFLOP/s"),
])
def test_reduction_and_attention_references(workload, unit):
    r = reference.measure(workload, "native", reps=2, min_seconds=0)
    assert r.ok, r.error
    assert r.unit == unit and r.median > 0


def test_numpy_attention_matches_the_templates_reference():
    import numpy as np

    from tunesvc.templates import get

    tpl, shape = get("attention_causal"), (1, 2, 4, 12, 8)
    inputs = tpl.make_inputs(shape, "float32", np.random.default_rng(1))
    got = reference.numpy_attention(inputs["Q"], inputs["K"], inputs["V"], float(inputs["scale"][0]), True)
    want = next(iter(tpl.reference(inputs, shape).values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_child_that_dies_is_a_reference_with_an_error():
    r = reference.measure({"kind": "no-such-workload"}, "native", reps=1, min_seconds=0)
    assert not r.ok and "child died (exit 1)" in r.error and "unknown workload kind" in r.error
    refs = {"native": r, "pinned": r}
    assert math.isnan(reference.ratio(1.0, refs)) and reference.cell(r) == "failed"
    assert "FAILED: child died" in reference.summary([refs])[0]
