"""Reductions on the real OpenCL device: every config of a small space on odd shapes, each op,
one and two passes, the ready callable and the CLI's answers to bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import tunesvc
from tunesvc import templates
from tunesvc.cli import main
from tunesvc.errors import UsageError
from tunesvc.measure.evaluator import Evaluator
from tunesvc.lookup import lookup  # tunesvc.lookup is also the submodule once imported
from tunesvc.search import SearchSpace
from tunesvc.templates.base import Context, Param
from tunesvc.templates.reduce import ReduceMean, ReduceSum
from tunesvc.types import Config


def small(cls, **values):
    """A subclass of a template whose parameters take only the given values (default kept where given)."""
    def param(p):
        vals = values.get(p.name, (p.default,))
        return Param(p.name, vals, p.default if p.default in vals else vals[0])

    params = tuple(param(p) for p in cls.params)
    return type(f"Small{cls.__name__}", (cls,), {"params": params})()


SMALL = dict(WG=(1, 16, 64), EPT=(1, 4), VW=(1, 4), RPG=(1, 4), SPLIT=(1, 4))
SMALLER = dict(SMALL, WG=(1, 64), EPT=(2,))


@pytest.mark.parametrize("shape", [(5, 1), (3, 37), (2, 1000003)])
def test_every_config_of_a_small_space_is_correct(each_cl_device, shape):
    # rows of a million elements: fewer configs, to keep the suite fast
    tpl = small(ReduceSum, **(SMALL if shape[1] < 1000 else SMALLER))
    space = SearchSpace.from_template(tpl, Context(shape, "float32", each_cl_device.info))
    assert len(space) >= 3, "the constraints leave too little of the space to test"
    ev = Evaluator(each_cl_device, tpl, shape, "float32")
    bad = [(dict(c), m.status, m.reason) for c in space.configs if not (m := ev.evaluate(c)).ok]
    assert not bad


@pytest.mark.parametrize("op", ["sum", "max", "mean", "sumsq"])
@pytest.mark.parametrize("split", [1, 4])
def test_each_op_one_and_two_passes(cl_device, op, split):
    tpl = templates.get(f"reduce_{op}")
    ev = Evaluator(cl_device, tpl, (3, 100003), "float32")
    m = ev.evaluate(Config(WG=64, EPT=2, VW=4, RPG=1, SPLIT=split))
    assert m.ok, m.reason
    assert m.gbps > 0


def test_rows_per_group_with_rows_not_a_multiple(cl_device):
    ev = Evaluator(cl_device, templates.get("reduce_sumsq"), (7, 3), "float32")
    assert ev.evaluate(Config(WG=16, EPT=1, VW=1, RPG=4, SPLIT=1)).ok


def test_a_kernel_that_skips_the_last_column_is_caught(cl_device):
    class SkipsLast(ReduceSum):
        def plan(self, config, shape, dtype):
            p = super().plan(config, shape, dtype)
            return type(p)(p.buffers, p.launches, {**p.defines, "TS_C": shape[1] - 1})

    m = Evaluator(cl_device, SkipsLast(), (5, 33), "float32").evaluate(Config(WG=16, EPT=1, VW=1, RPG=1, SPLIT=1))
    assert m.status == "wrong_result"
    assert "out" in m.reason


def test_float16_input_accumulates_in_float32(each_cl_device):
    if not each_cl_device.info.fp16:
        pytest.skip(f"{each_cl_device.info.name} has no float16 support (cl_khr_fp16)")
    # 70000 ones overflow a float16 accumulator (max 65504), not a float32 one.
    ev = Evaluator(each_cl_device, templates.get("reduce_sum"), (2, 70001), "float16")
    assert ev.evaluate(Config(WG=64, EPT=2, VW=4, RPG=1, SPLIT=4)).ok


def test_mean_divides_once_after_the_combine(cl_device):
    tpl = small(ReduceMean, SPLIT=(1, 16))
    ev = Evaluator(cl_device, tpl, (2, 65537), "float32")
    assert ev.evaluate(Config(WG=64, EPT=1, VW=1, RPG=1, SPLIT=16)).ok


@pytest.mark.parametrize("op,fn", [("sum", np.sum), ("max", np.max), ("mean", np.mean), ("sumsq", lambda a, axis: np.sum(a * a, axis=axis))])
def test_callable_matches_numpy(db_path, op, fn):
    x = np.random.default_rng(1).uniform(-1, 1, (4, 6, 33)).astype(np.float32)
    for axis in (-1, 0, None):
        got = tunesvc.reduce(x, op=op, axis=axis)
        want = fn(x.astype(np.float64), axis=axis)
        assert got.dtype == np.float32
        assert np.shape(got) == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_callable_uses_the_tuned_config(db_path, cl_info):
    tunesvc.tune("reduce_max", (4, 1000), trials=3, seed=1, db=str(db_path))
    res = lookup("reduce_max", (4, 1000), "float32", cl_info, str(db_path))
    assert res.level == "exact"
    x = np.random.default_rng(2).standard_normal((4, 1000)).astype(np.float32)
    np.testing.assert_array_equal(tunesvc.reduce(x, "max", db=str(db_path)), x.max(axis=1))


@pytest.mark.parametrize("bad", [dict(op="prod"), dict(axis=3), dict(x=np.zeros((0, 4), np.float32)), dict(x=np.ones(4, np.int32))])
def test_callable_rejects_bad_input(db_path, bad):
    args = dict(x=np.ones((2, 3), np.float32), op="sum", axis=-1) | bad
    with pytest.raises(UsageError):
        tunesvc.reduce(args.pop("x"), **args)


@pytest.mark.parametrize("shape", ["0x5", "4", "4x5x6", "ax3"])
def test_cli_bad_shape_exits_2_with_one_line(db_path, shape):
    r = CliRunner().invoke(main, ["tune", "reduce_sum", "--shape", shape, "--db", str(db_path)])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1
    assert "RxC" in r.output
    assert not db_path.exists()


def test_cli_tunes_a_reduction(db_path):
    r = CliRunner().invoke(main, ["tune", "reduce_sum", "--shape", "3x1001", "--trials", "2", "--seed", "0", "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "tuned reduce_sum 3x1001 float32" in r.output
    assert "GB/s" in r.output
