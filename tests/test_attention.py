"""Fused attention on the real OpenCL device: every config of a small space on odd shapes (KV not
a multiple of the key block, Q = 1, head dim 40, causal on and off), flash-decoding splits, the
ready callable and the CLI's answers to bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import tunesvc
from tunesvc import templates
from tunesvc.cli import main
from tunesvc.errors import InvalidShapeError, UsageError
from tunesvc.measure.evaluator import Evaluator
from tunesvc.search import SearchSpace
from tunesvc.templates.attention import Attention, AttentionCausal, attention_reference
from tunesvc.templates.base import Context, Param
from tunesvc.types import Config


def small(cls, **values):
    """A subclass of a template whose parameters take only the given values."""
    def param(p):
        vals = values.get(p.name, (p.default,))
        return Param(p.name, vals, p.default if p.default in vals else vals[0])

    return type(f"Small{cls.__name__}", (cls,), {"params": tuple(param(p) for p in cls.params)})()


# 12 configs: both mappings (work-group shared, and one work-item per query block), one and two
# passes, with and without local staging, one and several queries per group or work-item
SMALL = dict(QPG=(1, 4), LKV=(0, 1), SPLIT=(1, 3), DV=(4,), MAP=(0, 1), WG=(1, 32))


@pytest.mark.parametrize("cls", [Attention, AttentionCausal])
@pytest.mark.parametrize("shape", [(1, 2, 3, 37, 40), (2, 1, 1, 45, 40)])
def test_every_config_of_a_small_space_is_correct(each_cl_device, cls, shape):
    tpl = small(cls, **SMALL)
    space = SearchSpace.from_template(tpl, Context(shape, "float32", each_cl_device.info))
    assert len(space) >= 4 and {c["MAP"] for c in space.configs} == {0, 1}
    ev = Evaluator(each_cl_device, tpl, shape, "float32")
    bad = [(dict(c), m.status, m.reason) for c in space.configs if not (m := ev.evaluate(c)).ok]
    assert not bad


@pytest.mark.parametrize("config", [
    dict(QPG=2, KB=8, DV=1, WG=16, LKV=1, SPLIT=2, MAP=0),
    dict(QPG=8, KB=16, DV=8, WG=128, LKV=0, SPLIT=1, MAP=0),
    dict(QPG=1, KB=8, DV=2, WG=32, LKV=0, SPLIT=2, MAP=0),
    # one work-item per query block: partial groups (WG=4 over 2x5x2 work-items), DV=8 partial sums
    # of a dot product over 40 = 32 + 8 (the tree folds the tail first), queries past Q in a block
    dict(QPG=2, KB=16, DV=8, WG=4, LKV=0, SPLIT=2, MAP=1),
    dict(QPG=4, KB=16, DV=1, WG=1, LKV=0, SPLIT=1, MAP=1),
])
def test_block_sizes_vector_widths_and_work_groups(cl_device, config):
    # Causal with Q = KV: the first query sees one key; blocks and splits past a query's limit are empty.
    ev = Evaluator(cl_device, templates.get("attention_causal"), (1, 2, 9, 9, 40), "float32")
    m = ev.evaluate(Config(config))
    assert m.ok, m.reason


def test_a_kernel_that_drops_the_last_key_is_caught(cl_device):
    class DropsLast(Attention):
        def plan(self, config, shape, dtype):
            p = super().plan(config, shape, dtype)
            return type(p)(p.buffers, p.launches, {**p.defines, "TS_KV": shape[3] - 1})

    # K and V keep their real row stride only when TS_KV is right, so this reads a wrong layout too;
    # the point is that nothing of the kind passes verification.
    m = Evaluator(cl_device, DropsLast(), (1, 1, 2, 33, 8), "float32").evaluate(DropsLast().default_config())
    assert m.status == "wrong_result"


def test_float16_storage_accumulates_in_float32(each_cl_device):
    if not each_cl_device.info.fp16:
        pytest.skip(f"{each_cl_device.info.name} has no float16 support (cl_khr_fp16)")
    ev = Evaluator(each_cl_device, templates.get("attention"), (1, 2, 1, 300, 64), "float16")
    assert ev.evaluate(Config(QPG=1, KB=32, DV=4, WG=32, LKV=0, SPLIT=4, MAP=0)).ok
    assert ev.evaluate(Config(QPG=1, KB=16, DV=4, WG=1, LKV=0, SPLIT=4, MAP=1)).ok


def test_counts_of_causal_work():
    # query i of Q = KV = 4 sees i + 1 keys: 10 pairs per head
    assert AttentionCausal().pairs((1, 1, 4, 4, 8)) == 10
    assert Attention().pairs((1, 1, 4, 4, 8)) == 16
    assert AttentionCausal().pairs((1, 1, 1, 50, 8)) == 50  # decode: the one query sees every key
    assert Attention().bound_for((1, 8, 1, 4096, 128)) == "read_bandwidth"
    assert Attention().bound_for((1, 8, 1024, 1024, 64)) == "flops"


@pytest.mark.parametrize("causal", [False, True])
def test_callable_matches_the_reference(db_path, causal):
    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 3, 5, 40)).astype(np.float32)
    k = rng.standard_normal((2, 3, 19, 40)).astype(np.float32)
    v = rng.standard_normal((2, 3, 19, 40)).astype(np.float32)
    got = tunesvc.attention(q, k, v, causal=causal, scale=0.3)
    want = attention_reference(q, k, v, 0.3, causal)
    assert got.shape == q.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    other = attention_reference(q, k, v, 0.3, not causal)
    assert np.abs(got - other).max() > 1e-2  # the mask matters on this shape


def test_callable_default_scale(db_path):
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, 1, 1, 16), (1, 1, 7, 16), (1, 1, 7, 16)))
    np.testing.assert_allclose(tunesvc.attention(q, k, v), attention_reference(q, k, v, 0.25, False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shapes", [((1, 1, 2, 8), (1, 1, 3, 4), (1, 1, 3, 4)), ((1, 2, 8), (1, 2, 8), (1, 2, 8)), ((1, 1, 2, 8), (1, 1, 3, 8), (1, 1, 4, 8))])
def test_callable_rejects_mismatched_shapes(db_path, shapes):
    q, k, v = (np.zeros(s, np.float32) for s in shapes)
    with pytest.raises(UsageError):
        tunesvc.attention(q, k, v)


def test_causal_needs_q_at_most_kv():
    with pytest.raises(InvalidShapeError, match="Q <= KV"):
        templates.get("attention_causal").parse_shape("1x1x8x4x16")
    assert templates.get("attention").parse_shape("1x1x8x4x16") == (1, 1, 8, 4, 16)


@pytest.mark.parametrize("shape,says", [("1x8x1x4096x512", "D <= 256"), ("1x8x1x4096", "BxHxQxKVxD"), ("1x8x0x64x64", "must be >= 1"), ("1x8x9x8x64", "Q <= KV")])
def test_cli_bad_shape_exits_2_with_one_line(db_path, shape, says):
    r = CliRunner().invoke(main, ["tune", "attention_causal", "--shape", shape, "--db", str(db_path)])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1
    assert says in r.output
    assert not db_path.exists()
