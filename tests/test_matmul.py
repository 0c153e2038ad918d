"""The matmul template on the real OpenCL device: every config of a small space is correct."""

from __future__ import annotations

import numpy as np
import pytest

from tunesvc import templates
from tunesvc.errors import InvalidShapeError, UnsupportedDtypeError
from tunesvc.measure.evaluator import Evaluator, Method
from tunesvc.search import SearchSpace
from tunesvc.templates.base import Context
from tunesvc.types import Config

MATMUL = templates.get("matmul")

# A slice of the space that still covers every code path: local staging on and off,
# packed B on and off, each vector width, register blocks of several sizes, unrolling.
SMALL = {
    "MDIM": (1, 2, 4),
    "NDIM": (1, 4, 8),
    "KWG": (8, 16),
    "WPTM": (1, 2, 4),
    "WPTN": (2, 4, 8),
    "VW": (1, 2, 4, 8),
    "LOCAL": (0, 1),
    "UNROLL": (1, 4),
    "PACKB": (0, 1),
}


def variant(source: str):
    """A matmul template whose kernel source is ``source`` (to inject faults)."""
    assert source != MATMUL.source, "the fault was not injected"
    return type("MatmulVariant", (type(MATMUL),), {"source": source})()


def small_configs(shape, info, limit_per_shape=None):
    ctx = Context(shape, "float32", info)
    out = []
    for c in MATMUL.all_configs():
        if all(c[k] in v for k, v in SMALL.items()) and MATMUL.is_valid(c, ctx):
            out.append(c)
    return out


@pytest.mark.parametrize("shape", [(1, 1, 1), (17, 33, 65), (128, 96, 40), (33, 8, 17)])
def test_every_small_config_computes_the_right_product(each_cl_device, shape):
    configs = small_configs(shape, each_cl_device.info)
    assert configs, "the small space must not be empty"
    # Each VW, LOCAL and PACKB value must really be exercised where the shape allows it.
    for name in ("LOCAL", "PACKB"):
        assert {c[name] for c in configs} == {0, 1} or shape[1] < 2
    ev = Evaluator(each_cl_device, MATMUL, shape, "float32", Method(warmup=0, runs=1), seed=3)
    # One config (drawn with a fixed seed) per combination of the code-path switches keeps the
    # run short (each config is a fresh compile) while every path runs on every shape.
    rng = np.random.default_rng(sum(shape))
    groups: dict = {}
    for c in configs:
        groups.setdefault((c["LOCAL"], c["PACKB"], c["VW"]), []).append(c)
    sample = [g[int(rng.integers(len(g)))] for _, g in sorted(groups.items())]
    failures = [(dict(c), m.status, m.reason) for c in sample if not (m := ev.evaluate(c)).ok]
    assert not failures, failures[:3]


def test_default_config_is_valid_without_device_limits_and_on_the_device(cl_info):
    d = MATMUL.default_config()
    for shape in [(1, 1, 1), (7, 9, 3), (1024, 1024, 1024)]:
        assert MATMUL.is_valid(d, Context(shape, "float32", None))
        assert MATMUL.is_valid(d, Context(shape, "float32", cl_info))


def test_wrong_kernel_is_caught_by_verification(cl_device):
    """A kernel that computes the wrong thing must be recorded as wrong_result, not timed."""
    bad = variant(MATMUL.source.replace("acc[i][j] += a * b[j];", "acc[i][j] += a * b[j] * 1.001f;"))
    ev = Evaluator(cl_device, bad, (16, 16, 64), "float32", Method(warmup=0, runs=1))
    m = ev.evaluate(bad.default_config())
    assert m.status == "wrong_result" and "relative error" in m.reason
    assert m.timing is None


def test_unwritten_output_is_caught_by_the_poisoned_buffer(cl_device):
    """A kernel that skips its stores must fail even if an earlier run left right answers behind."""
    bad = variant(MATMUL.source.replace("STOREV(VW)(acc[i], v * VW, Cb,", "if (0) STOREV(VW)(acc[i], v * VW, Cb,"))
    good = Evaluator(cl_device, MATMUL, (16, 16, 16), "float32", Method(warmup=0, runs=1))
    assert good.evaluate(MATMUL.default_config()).ok
    ev = Evaluator(cl_device, bad, (16, 16, 16), "float32", Method(warmup=0, runs=1))
    ev._buffers = good._buffers  # same buffers: C still holds the right product from the good run
    m = ev.evaluate(bad.default_config())
    assert m.status == "wrong_result" and "not finite" in m.reason


def test_build_failure_is_a_measurement_with_its_reason(cl_device):
    bad = variant(MATMUL.source + "\nthis is not C;\n")
    ev = Evaluator(cl_device, bad, (8, 8, 8), "float32")
    m = ev.evaluate(bad.default_config())
    assert m.status == "build" and m.reason


def test_constraint_violation_is_reported_by_name(cl_device):
    ev = Evaluator(cl_device, MATMUL, (8, 6, 8), "float32")
    m = ev.evaluate(MATMUL.default_config().replace(VW=4, WPTN=4, NDIM=1))
    assert m.status == "constraint" and "vector_divides_n" in m.reason


def test_space_for_a_large_shape_is_big_and_holds_only_valid_configs(cl_info):
    ctx = Context((1024, 1024, 1024), "float32", cl_info)
    space = SearchSpace.from_template(MATMUL, ctx)
    assert len(space) > 5000
    assert space.default == MATMUL.default_config()
    assert all(MATMUL.is_valid(c, ctx) for c in space.configs[::97])


@pytest.mark.parametrize("bad", ["12x", "0x4x4", "-1x2x3", "axbxc", "1x2", "1x2x3x4", ""])
def test_bad_shapes_are_refused(bad):
    with pytest.raises(InvalidShapeError):
        MATMUL.parse_shape(bad)


def test_float16_needs_device_support(cl_no_fp16):
    with pytest.raises(UnsupportedDtypeError, match="float16"):
        MATMUL.check_dtype("float16", cl_no_fp16)


@pytest.mark.parametrize("shape", [(17, 33, 65), (64, 64, 256)])
def test_float16_storage_with_float_accumulation_is_right(each_cl_device, shape):
    """float16 A, B and C, accumulated in float32: checked against float64 with the float16 tolerance."""
    if not each_cl_device.info.fp16:
        pytest.skip(f"{each_cl_device.info.name} ({each_cl_device.info.fingerprint.driver}) has no cl_khr_fp16")
    MATMUL.check_dtype("float16", each_cl_device.info)
    ctx = Context(shape, "float16", each_cl_device.info)
    configs = [c for c in small_configs(shape, each_cl_device.info) if MATMUL.is_valid(c, ctx)]
    ev = Evaluator(each_cl_device, MATMUL, shape, "float16", Method(warmup=0, runs=1), seed=5)
    rng = np.random.default_rng(7)
    picked = {(c["LOCAL"], c["PACKB"], c["VW"]): c for c in (configs[i] for i in rng.permutation(len(configs)))}
    results = {c: ev.evaluate(c) for c in list(picked.values())[:8]}
    bad = {c: (m.status, m.reason) for c, m in results.items() if not m.ok}
    assert not bad, bad


def test_check_config_rejects_unknown_and_out_of_space_values():
    from tunesvc.errors import InvalidConfigError

    good = dict(MATMUL.default_config())
    assert MATMUL.check_config(good) == Config(good)
    with pytest.raises(InvalidConfigError, match="unknown"):
        MATMUL.check_config({**good, "EVIL": 1})
    with pytest.raises(InvalidConfigError, match="not one of"):
        MATMUL.check_config({**good, "MDIM": 3})
    with pytest.raises(InvalidConfigError, match="not one of"):
        MATMUL.check_config({**good, "LOCAL": True})
