"""Quantized GEMV on the real OpenCL devices: configs covering every parameter value on edge
shapes (K not a multiple of the group or the vector width, N of 1, odd batches), every format
(int8, int4; float32 and float16 scales; with and without zero points), the quantize helper's
layout and round trip, the numpy callable, and one-line errors for bad layouts."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import tunesvc
from tunesvc import templates
from tunesvc.cli import main
from tunesvc.errors import InvalidShapeError, UsageError
from tunesvc.kernels.quant import QuantizedMatrix, pack_codes, quantize, unpack_codes
from tunesvc.measure.evaluator import Evaluator, Method
from tunesvc.templates.base import Context
from tunesvc.templates.gemv_q import GemvQ

FAST = Method.plain(1)  # correctness only: one timed run


# (template, BxNxKxBITSxG, scales): K = 77 and 161 leave a short last group and an odd int4 row,
# N = 1 a single row, batches of 1, 3 and 5 rows
CASES = [
    ("gemv_q", (3, 37, 77, 4, 32), "float16"),
    ("gemv_q", (1, 1, 161, 8, 64), "float32"),
    ("gemv_q_zp", (5, 19, 256, 4, 128), "float32"),
    ("gemv_q_zp", (2, 24, 97, 8, 32), "float16"),
]


def covering(info, get=templates.get, params=None, cases=CASES):
    """Each case's default config, then (case, config) pairs that together take every value of
    every parameter (of ``params``, or all) that a valid config of some case can take (greedy set
    cover over all the cases at once: each build costs a second on a CPU driver)."""
    pool = [(case, c) for case in cases for c in get(case[0]).valid_configs(Context(case[1], case[2], info))]
    pairs = lambda c: {(k, v) for k, v in c.items() if params is None or k in params}  # noqa: E731
    want = set().union(*(pairs(c) for _, c in pool))
    picked = [(case, get(case[0]).default_config()) for case in cases]
    seen = set().union(*(pairs(c) for _, c in picked))
    while not want <= seen:
        best = max(pool, key=lambda pc: len(pairs(pc[1]) - seen))
        picked.append(best)
        seen |= pairs(best[1])
    return picked


def test_configs_covering_every_parameter_value_are_correct(each_cl_device):
    picked = covering(each_cl_device.info)
    assert {case for case, _ in picked} == set(CASES)
    bad = []
    for (name, shape, dtype), c in picked:
        m = Evaluator(each_cl_device, templates.get(name), shape, dtype, FAST, seed=1).evaluate(c)
        if not m.ok:
            bad.append((name, shape, dtype, dict(c), m.status, m.reason))
    assert not bad


def test_the_portable_form_is_correct_too(cl_device):
    """The private-array form that GPUs and CUDA build, run here on the CPU device, rows shared by
    several work-items (WPR > 1, a GPU's way, not searched on CPUs) included."""
    keep = tuple(c for c in GemvQ.constraints if c.name != "whole_rows_on_cpus")
    source = "#undef TS_DEVICE_CPU\n#define TS_DEVICE_CPU 0\n" + GemvQ().source
    forms = {name: type("Portable", (type(templates.get(name)),), {"source": source, "constraints": keep})()
             for name in ("gemv_q", "gemv_q_zp")}
    # the parameters that change the code of the form; two cases (int4 and int8, with and without z)
    picked = covering(cl_device.info, forms.get, ("WPR", "VB", "UNPACK", "ZSUM", "XL", "XQ"), CASES[::3])
    assert {c["WPR"] for _, c in picked} >= {1, 2, 32}
    for (name, shape, dtype), c in picked:
        m = Evaluator(cl_device, forms[name], shape, dtype, FAST, seed=2).evaluate(c)
        assert m.ok, (name, shape, dict(c), m.reason)


def test_rows_shared_by_work_items_are_correct_on_a_cpu_too(cl_device):
    """WPR > 1 in the CPU form (the constraint is about speed, not correctness)."""
    keep = tuple(c for c in GemvQ.constraints if c.name != "whole_rows_on_cpus")
    tpl = type("Shared", (GemvQ,), {"constraints": keep})()
    for c in (dict(RPG=4, RPW=2, WPR=4, VB=2), dict(RPG=2, WPR=16, VB=1, SPLIT=2, UNPACK=1, ZSUM=1)):
        m = Evaluator(cl_device, tpl, (3, 37, 77, 4, 32), "float16", FAST).evaluate(tpl.check_config({**tpl.default_config(), **c}))
        assert m.ok, (c, m.reason)


def test_every_parameter_value_is_valid_somewhere():
    """No value of the space is dead: each is valid at one of the test shapes or the default."""
    for name in ("gemv_q", "gemv_q_zp"):
        tpl = templates.get(name)
        seen = set()
        for shape in [tpl.default_shape] + [s for n, s, _ in CASES if n == name]:
            seen |= {(k, v) for c in tpl.valid_configs(Context(shape, "float32")) for k, v in c.items()}
        assert {(p.name, v) for p in tpl.params for v in p.values} <= seen


def test_a_kernel_that_skips_the_short_last_group_is_caught(cl_device):
    class SkipsTail(GemvQ):
        source = GemvQ().source.replace("#if TS_K % GS\n", "#if 0\n", 1)

    assert SkipsTail.source != GemvQ().source
    m = Evaluator(cl_device, SkipsTail(), (1, 8, 40, 4, 32), "float32", FAST).evaluate(SkipsTail().default_config())
    assert m.status == "wrong_result" and "Y" in m.reason


def test_the_packing_is_two_codes_per_byte_even_weight_low():
    codes = np.array([[1, 2, 3, 4, 15]])
    packed = pack_codes(codes, 4)
    assert packed.dtype == np.uint8 and packed.tolist() == [[0x21, 0x43, 0x0F]]  # odd K: last high nibble 0
    np.testing.assert_array_equal(unpack_codes(packed, 4, 5), codes)
    assert pack_codes(np.array([[-128, 127]]), 8, signed=True).dtype == np.int8


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("zero_points", [False, True])
@pytest.mark.parametrize("scale_dtype", ["float32", "float16"])
def test_quantize_round_trip_within_half_a_step(bits, group, zero_points, scale_dtype):
    rng = np.random.default_rng(bits * group)
    w = rng.standard_normal((6, 150)) * rng.uniform(0.1, 3, (6, 1))  # K = 150: a short last group
    w[0, :group] = 0.0  # an all-zero group
    w[1] = np.abs(w[1]) + 1  # one sign only: the zero points' range still holds 0
    q = quantize(w, bits, group, zero_points=zero_points, scale_dtype=scale_dtype)
    assert q.shape == (6, 150) and q.scale_dtype == scale_dtype and (q.zeros is not None) == zero_points
    step = np.repeat(q.scales.astype(np.float64), group, axis=1)[:, :150]
    err = np.abs(q.dequantize().astype(np.float64) - w)
    assert np.all(err <= step / 2 + 2.0**-23 * np.abs(w) + 1e-12)
    assert np.all(q.dequantize()[0, :group] == 0)
    codes = q.codes()
    lo, hi = (-127, 127) if bits == 8 and not zero_points else (0, (1 << bits) - 1)
    assert codes.min() >= lo and codes.max() <= hi


def test_quantize_rejects_what_it_cannot_quantize():
    for bad, words in [(dict(w=np.ones(4)), "2-D"), (dict(bits=3), "bits=3"), (dict(group_size=16), "group_size=16"),
                       (dict(w=np.array([[np.nan, 1.0]])), "NaN"), (dict(w=np.full((1, 32), 1e9), scale_dtype="float16"), "float16")]:
        args = dict(w=np.ones((2, 32)), bits=4, group_size=32) | bad
        with pytest.raises(UsageError, match=words):
            quantize(args.pop("w"), **args)


@pytest.mark.parametrize("change,words", [
    (dict(scales=np.ones((8, 3), np.float32)), r"scales are \(8, 3\) float32; .* needs \(8, 4\) float32 or float16"),
    (dict(qweight=np.zeros((8, 100), np.uint8)), r"packed weights are \(8, 100\) uint8; .* needs \(8, 50\) uint8"),
    (dict(qweight=np.zeros((8, 50), np.int8)), r"needs \(8, 50\) uint8"),
    (dict(zeros=np.zeros((4, 4), np.uint8)), r"zero points are \(4, 4\) uint8; .* needs \(8, 4\) uint8"),
    (dict(zeros=np.full((8, 4), 16, np.uint8)), r"zero points reach 16; int4 codes are 0..15"),
])
def test_bad_layouts_get_one_line_naming_the_expected_shape(change, words):
    good = dict(qweight=np.zeros((8, 50), np.uint8), scales=np.ones((8, 4), np.float32), zeros=None,
                shape=(8, 100), bits=4, group_size=32)
    with pytest.raises(InvalidShapeError, match=words) as e:
        QuantizedMatrix(**(good | change))
    assert "\n" not in str(e.value)


def test_own_weights_come_in_as_they_are():
    """Codes, scales and zero points made elsewhere in the documented layout, checked and kept."""
    qweight = pack_codes(np.arange(64).reshape(2, 32) % 16, 4)
    q = QuantizedMatrix(qweight, np.full((2, 1), 0.5, np.float16), np.full((2, 1), 8, np.uint8), (2, 32), 4, 32)
    np.testing.assert_array_equal(q.dequantize()[0, :4], [-4.0, -3.5, -3.0, -2.5])
    assert not q.qweight.flags.writeable and qweight.flags.writeable  # a view is read-only, not the caller's array


@pytest.mark.parametrize("bits,group,zero_points,scale_dtype", [(4, 32, False, "float16"), (8, 128, True, "float32"),
                                                                (4, 64, True, "float32"), (8, 32, False, "float16")])
def test_callable_matches_the_float64_reference(db_path, each_cl_device, bits, group, zero_points, scale_dtype):
    rng = np.random.default_rng(bits + group)
    w = rng.standard_normal((33, 100)).astype(np.float32)
    q = tunesvc.quantize(w, bits, group, zero_points=zero_points, scale_dtype=scale_dtype)
    ref_w = q.dequantize().astype(np.float64)
    for x in (rng.standard_normal(100).astype(np.float32), rng.standard_normal((5, 100)).astype(np.float32)):
        y = tunesvc.gemv_q(x, q, device=each_cl_device.info, db=str(db_path))
        want = x.astype(np.float64) @ ref_w.T
        assert y.shape == want.shape and y.dtype == np.float32
        scale = np.abs(x.astype(np.float64)) @ np.abs(ref_w).T
        assert np.all(np.abs(y - want) <= 1e-5 * scale + 1e-30)


def test_callable_rejects_bad_input(db_path):
    q = tunesvc.quantize(np.ones((4, 64), np.float32), 4, 32)
    for x, words in [(np.ones(63, np.float32), r"x of shape \(64,\) or \(B, 64\) with B from 1 to 16"),
                     (np.ones((17, 64), np.float32), "B from 1 to 16"), (np.ones(64, np.int32), "float32 or float16")]:
        with pytest.raises(UsageError, match=words):
            tunesvc.gemv_q(x, q)
    with pytest.raises(UsageError, match="tunesvc.quantize"):
        tunesvc.gemv_q(np.ones(64, np.float32), np.ones((4, 64), np.float32))


def test_counts_and_bound():
    tpl = templates.get("gemv_q")
    # 4096x4096 int4 in groups of 32 with float16 scales: 8 MiB of codes, 1 MiB of scales, x and y
    assert tpl.bytes_moved((1, 4096, 4096, 4, 32), "float16") == 4096 * 2048 + 4096 * 128 * 2 + 4 * 4096 + 4 * 4096
    assert templates.get("gemv_q_zp").bytes_moved((1, 8, 64, 8, 32), "float32") == 8 * 64 + 8 * 2 * 4 + 8 * 2 + 4 * 64 + 4 * 8
    assert tpl.flops((2, 10, 20, 8, 32)) == 2 * 2 * 10 * 20
    assert tpl.bound_for((1, 4096, 4096, 4, 32)) == "read_bandwidth"
    assert tpl.check_dtype("float16", None) == "float16"  # float16 scales need no cl_khr_fp16


@pytest.mark.parametrize("shape,says", [("1x64x100x3x32", "BITS=3"), ("1x64x100x4x16", "G=16"), ("17x64x100x4x32", "B=17"),
                                        ("1x64x100x4", "BxNxKxBITSxG")])
def test_cli_bad_shape_exits_2_with_one_line(db_path, shape, says):
    r = CliRunner().invoke(main, ["tune", "gemv_q", "--shape", shape, "--db", str(db_path)])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1
    assert says in r.output
    assert not db_path.exists()


@pytest.mark.parametrize("name, shape, dtype", [
    ("gemv_q", (2, 13, 300, 8, 32), "float16"),   # 9 full groups: two steps of 4, one alone, a short last
    ("gemv_q", (1, 9, 333, 4, 32), "float32"),    # 10 full groups and a short odd last one
    ("gemv_q_zp", (3, 7, 640, 4, 64), "float16"),  # 10 full groups, no short one
])
def test_groups_four_at_a_time_are_correct(cl_device, name, shape, dtype):
    """GB=4 (four groups per step, their scales converted as one vector) with the groups left
    over, with K split and, for int4, the nibble planes and zero sums: the covering configs' edge
    cases have too few full groups for a step of four."""
    tpl = templates.get(name)
    configs = [dict(GB=4), dict(GB=4, SPLIT=2, RPG=2), dict(GB=4, VB=16, RPW=2, RPG=2)]
    if shape[3] == 4:
        configs.append(dict(GB=4, UNPACK=1, ZSUM=1, VB=4))
    for c in configs:
        config = tpl.check_config({**tpl.default_config(), **c})
        assert not tpl.violations(config, Context(shape, dtype, cl_device.info)), c
        m = Evaluator(cl_device, tpl, shape, dtype, FAST, seed=2).evaluate(config)
        assert m.ok, (c, m.status, m.reason)


def _rounded_x_config(tpl, shape, **extra):
    c = {**tpl.default_config(), "XQ": 1, "VB": 16, "UNPACK": int(shape[3] == 4), **extra}
    return tpl.check_config(c)


@pytest.mark.parametrize("name, shape, dtype", [
    ("gemv_q", (3, 40, 320, 4, 32), "float16"),
    ("gemv_q", (2, 24, 256, 8, 64), "float32"),
    ("gemv_q_zp", (1, 16, 384, 4, 128), "float32"),
])
def test_x_rounded_to_16_bits_stays_within_its_bound_on_spiky_x(each_cl_device, name, shape, dtype):
    """XQ=1 rounds x per group to max|x| / 32767 steps: with one spike per group (a thousand
    times the rest, the worst case for a per-group scale) it still passes the check, whose
    allowance for the rounding is the one GemvQ._x_rounding states (without it the int4 case
    fails: 4.6e-5 against 3.1e-5)."""
    base = templates.get(name)

    class Spiky(type(base)):
        def make_inputs(self, shape, dtype, rng):
            out = super().make_inputs(shape, dtype, rng)
            x = out["X"] * np.float32(1e-3)
            x[:, :: shape[4]] = rng.uniform(1, 2, x[:, :: shape[4]].shape).astype(np.float32)
            out["X"] = x
            return out

    tpl = Spiky()
    ev = Evaluator(each_cl_device, tpl, shape, dtype, FAST, seed=3)
    rounded = _rounded_x_config(tpl, shape)
    assert not tpl.violations(rounded, Context(shape, dtype, each_cl_device.info))
    m = ev.evaluate(rounded)
    assert m.ok, m.reason


def test_a_coarser_rounding_of_x_is_caught(cl_device):
    """The check's allowance is for 16-bit steps: x rounded to 8 bits instead fails it."""
    class Coarse(GemvQ):
        source = GemvQ().source.replace("32767.0f / m", "127.0f / m").replace("m / 32767.0f", "m / 127.0f")

    assert "127.0f / m" in Coarse.source and "m / 127.0f" in Coarse.source
    shape = (1, 32, 512, 4, 32)
    tpl = Coarse()
    m = Evaluator(cl_device, tpl, shape, "float32", FAST).evaluate(_rounded_x_config(tpl, shape))
    assert m.status == "wrong_result" and "Y" in m.reason
    assert Evaluator(cl_device, GemvQ(), shape, "float32", FAST).evaluate(_rounded_x_config(GemvQ(), shape)).ok


def test_rounded_x_is_for_cpus_only(cl_device):
    """XQ=1 is written for CPUs' vector units: the constraint leaves it out of a GPU's space, and
    it needs pairs (VB >= 2), int4 in nibble planes and the zero point subtracted per weight."""
    from types import SimpleNamespace
    tpl = GemvQ()
    shape = (1, 64, 256, 4, 32)
    broken = lambda c: tpl.violations(tpl.check_config({**tpl.default_config(), **c}), Context(shape, "float32", cl_device.info))  # noqa: E731
    for c in (dict(XQ=1, UNPACK=0), dict(XQ=1, UNPACK=1, VB=1), dict(XQ=1, UNPACK=1, ZSUM=1), dict(XQ=1, UNPACK=1, XL=1)):
        assert "rounded_x_in_pairs" in broken(c), c
    assert not broken(dict(XQ=1, UNPACK=1))
    on_cpus = next(c for c in tpl.constraints if c.name == "rounded_x_on_cpus")
    gpu = SimpleNamespace(shape=shape, known_device=SimpleNamespace(device_type="gpu"))
    config = tpl.check_config({**tpl.default_config(), "XQ": 1, "UNPACK": 1})
    assert not on_cpus.check(config, gpu) and on_cpus.check(tpl.default_config(), gpu)
