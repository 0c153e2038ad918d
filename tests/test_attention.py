"""Fused attention on the real OpenCL devices: grouped-query (Hkv < Hq, multi-query Hkv = 1) and
multi-head shapes, configs covering every mapping and parameter value on odd shapes (KV of 1 and
primes, not a multiple of the key block; Q = 1; head dim 40), causal on and off, flash-decoding
splits, float16 storage, the ready callable and the one-line answers to bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import tunesvc
from tunesvc import templates
from tunesvc.cli import main
from tunesvc.errors import InvalidShapeError, UsageError
from tunesvc.identity import platform_label
from tunesvc.measure.evaluator import Evaluator, Method
from tunesvc.templates.attention import Attention, AttentionCausal, attention_reference
from tunesvc.templates.base import Context
from tunesvc.types import Config

FAST = Method.plain(1)  # correctness only: one timed run

# (template, BxHqxHkvxQxKVxD): grouped-query prefill-like (2 query heads per KV head, KV prime),
# multi-query decode (KV prime), query rows = keys (the first causal query sees one key), KV of
# 1. Head dims stay small: the mappings unroll over them, and each build must take a second.
CASES = [("attention", (1, 4, 2, 5, 37, 16)), ("attention", (2, 4, 1, 1, 43, 16)), ("attention_causal", (1, 4, 2, 5, 37, 16)),
         ("attention_causal", (1, 3, 3, 9, 9, 8)), ("attention_causal", (1, 2, 2, 1, 1, 8))]


def covering(info):
    """Each case's default config, then (case, config) pairs that together take every value of
    every parameter a valid config can take at some case (greedy set cover over both templates
    at once: each build costs a second on a CPU driver)."""
    pool = [((name, shape), c) for name, shape in CASES
            for c in templates.get(name).valid_configs(Context(shape, "float32", info))]
    want = {(k, v) for _, c in pool for k, v in c.items()}
    picked = [(case, templates.get(case[0]).default_config()) for case in CASES]
    seen = {(k, v) for _, c in picked for k, v in c.items()}
    while not want <= seen:
        best = max(pool, key=lambda cc: len(set(cc[1].items()) - seen))
        picked.append(best)
        seen |= set(best[1].items())
    return picked


def test_configs_covering_every_parameter_value_are_correct(each_cl_device):
    picked = covering(each_cl_device.info)
    assert {c["MAP"] for _, c in picked} == {0, 1, 2, 3}  # a CPU device takes the tiled mappings
    bad = []
    for (name, shape), c in picked:
        m = Evaluator(each_cl_device, templates.get(name), shape, "float32", FAST).evaluate(c)
        if not m.ok:
            bad.append((name, shape, dict(c), m.status, m.reason))
    assert not bad


@pytest.mark.parametrize("config", [
    dict(QPG=2, KB=8, DV=1, WG=16, LKV=1, SPLIT=2, MAP=0, PVO=0),
    dict(QPG=8, KB=16, DV=8, WG=128, LKV=0, SPLIT=1, MAP=0, PVO=0),
    # one work-item per row block: partial groups (WG=4), DV=8 partial sums of a dot product over
    # 40 = 32 + 8 (the tree folds the tail first), rows past the end in a block
    dict(QPG=2, KB=16, DV=8, WG=4, LKV=0, SPLIT=2, MAP=1, PVO=0),
    dict(QPG=4, KB=16, DV=1, WG=1, LKV=0, SPLIT=1, MAP=1, PVO=0),
    # tiles: K packed (2) or read in place (3), a block of 8 keys past a 9-key split, 3 splits
    dict(QPG=4, KB=8, DV=4, WG=1, LKV=0, SPLIT=2, MAP=2, PVO=0),
    dict(QPG=8, KB=16, DV=8, WG=1, LKV=0, SPLIT=1, MAP=3, PVO=0),
    # P·V by key (V row by row) and by chunk with V prefetched, on both tiles, split and not
    dict(QPG=4, KB=8, DV=4, WG=1, LKV=0, SPLIT=2, MAP=2, PVO=1),
    dict(QPG=2, KB=16, DV=8, WG=1, LKV=0, SPLIT=1, MAP=2, PVO=2),
    dict(QPG=8, KB=8, DV=8, WG=1, LKV=0, SPLIT=2, MAP=3, PVO=1),
    dict(QPG=4, KB=8, DV=4, WG=1, LKV=0, SPLIT=2, MAP=3, PVO=2),
])
def test_block_sizes_vector_widths_and_work_groups(each_cl_device, config):
    # Causal with Q = KV and two query heads per KV head: the first query sees one key; blocks
    # and splits past a row's limit are empty.
    ev = Evaluator(each_cl_device, templates.get("attention_causal"), (1, 4, 2, 9, 9, 40), "float32", FAST)
    if ev.template.violations(Config(config), ev.ctx) == ["prefetch_where_it_acts"]:
        pytest.skip(f"{each_cl_device.info.fingerprint.driver} does nothing with prefetch(): PVO=2 is not in its space")
    m = ev.evaluate(Config(config))
    assert m.ok, m.reason


@pytest.mark.parametrize("config", [
    dict(QPG=4, KB=8, DV=16, WG=1, LKV=0, SPLIT=2, MAP=2, PVO=0),
    dict(QPG=2, KB=16, DV=16, WG=1, LKV=0, SPLIT=1, MAP=2, PVO=1),
    dict(QPG=8, KB=8, DV=16, WG=1, LKV=0, SPLIT=2, MAP=3, PVO=1),
    dict(QPG=4, KB=8, DV=16, WG=1, LKV=0, SPLIT=2, MAP=3, PVO=2),
])
def test_sixteen_lanes_on_the_tiles(each_cl_device, config):
    # DV=16 (one AVX-512 register): head dim 48 = three chunks, the causal edge cases as above,
    # float32 and, where the device has it, float16 K and V
    dtypes = ["float32"] + (["float16"] if each_cl_device.info.fp16 else [])
    for dtype in dtypes:
        ev = Evaluator(each_cl_device, templates.get("attention_causal"), (1, 4, 2, 9, 9, 48), dtype, FAST)
        if ev.template.violations(Config(config), ev.ctx) == ["prefetch_where_it_acts"]:
            pytest.skip(f"{each_cl_device.info.fingerprint.driver} does nothing with prefetch(): PVO=2 is not in its space")
        m = ev.evaluate(Config(config))
        assert m.ok, (dtype, m.reason)


def test_sixteen_lanes_only_on_the_tiles(cl_device):
    # the shared and streamed mappings load DV lanes as scalars, 8 at most (CUDA has no wider vector)
    ctx = Context((1, 32, 8, 1, 4096, 128), "float32", cl_device.info)
    tpl = templates.get("attention")
    for m in (0, 1):
        assert "sixteen_lanes_only_tiled" in tpl.violations(Config(QPG=4, KB=16, DV=16, WG=32, LKV=0, SPLIT=8, MAP=m, PVO=0), ctx)
    assert "sixteen_lanes_only_tiled" not in tpl.violations(Config(QPG=4, KB=8, DV=16, WG=1, LKV=0, SPLIT=8, MAP=3, PVO=1), ctx)


def test_a_kernel_that_drops_the_last_key_is_caught(cl_device):
    class DropsLast(Attention):
        def plan(self, config, shape, dtype):
            p = super().plan(config, shape, dtype)
            return type(p)(p.buffers, p.launches, {**p.defines, "TS_KV": shape[4] - 1})

    # K and V keep their real row stride only when TS_KV is right, so this reads a wrong layout too;
    # the point is that nothing of the kind passes verification.
    tpl = DropsLast()
    for config in (tpl.default_config(), Config(QPG=2, KB=8, DV=4, WG=1, LKV=0, SPLIT=1, MAP=2, PVO=0),
                   Config(QPG=2, KB=8, DV=4, WG=1, LKV=0, SPLIT=1, MAP=3, PVO=1)):
        m = Evaluator(cl_device, tpl, (1, 2, 1, 2, 33, 8), "float32", FAST).evaluate(config)
        assert m.status == "wrong_result"


def test_float16_storage_accumulates_in_float32(each_cl_device):
    if not each_cl_device.info.fp16:
        pytest.skip(f"{each_cl_device.info.name} has no float16 support (cl_khr_fp16)")
    ev = Evaluator(each_cl_device, templates.get("attention"), (1, 4, 1, 1, 300, 32), "float16", FAST)
    for config in (dict(QPG=4, KB=32, DV=4, WG=32, LKV=0, SPLIT=4, MAP=0, PVO=0), dict(QPG=4, KB=16, DV=4, WG=1, LKV=0, SPLIT=4, MAP=1, PVO=0),
                   dict(QPG=4, KB=16, DV=8, WG=1, LKV=0, SPLIT=2, MAP=3, PVO=0), dict(QPG=4, KB=8, DV=8, WG=1, LKV=0, SPLIT=1, MAP=2, PVO=0),
                   dict(QPG=4, KB=8, DV=8, WG=1, LKV=0, SPLIT=2, MAP=3, PVO=1), dict(QPG=2, KB=16, DV=4, WG=1, LKV=0, SPLIT=1, MAP=3, PVO=2),
                   dict(QPG=4, KB=8, DV=4, WG=1, LKV=0, SPLIT=1, MAP=2, PVO=1)):
        m = ev.evaluate(Config(config))
        assert m.ok, (config, m.reason)


def test_value_order_is_a_parameter_of_the_tiles_only(cl_device):
    # PVO orders the tiles' P·V; the shared and streamed mappings have one order, so one value
    ctx = Context((1, 32, 8, 1, 4096, 128), "float32", cl_device.info)
    tpl = templates.get("attention")
    base = dict(QPG=4, KB=8, DV=8, WG=1, LKV=0, SPLIT=8)
    assert "value_order_only_tiled" in tpl.violations(Config(base, MAP=1, PVO=1), ctx)
    assert "value_order_only_tiled" not in tpl.violations(Config(base, MAP=3, PVO=2), ctx)


def test_prefetching_order_only_where_prefetch_acts(each_cl_device):
    # PoCL compiles prefetch() to nothing: PVO=2 would be PVO=0 again, a duplicate config
    info = each_cl_device.info
    ctx = Context((1, 32, 8, 1, 4096, 128), "float32", info)
    broken = templates.get("attention").violations(Config(QPG=4, KB=8, DV=8, WG=1, LKV=0, SPLIT=8, MAP=3, PVO=2), ctx)
    assert ("prefetch_where_it_acts" in broken) == (platform_label(info.platform) == "PoCL")


def test_counts_of_causal_and_grouped_work():
    # query i of Q = KV = 4 sees i + 1 keys: 10 pairs per query head
    assert AttentionCausal().pairs((1, 1, 4, 4, 8)) == 10
    assert Attention().pairs((1, 1, 1, 4, 4, 8)) == 16
    assert AttentionCausal().pairs((1, 1, 1, 1, 50, 8)) == 50  # decode: the one query sees every key
    assert Attention().flops((1, 32, 8, 1, 100, 128)) == 4 * 128 * 32 * 100
    # K and V once per KV head (8 of them), Q and O once per query head
    assert Attention().bytes_moved((1, 32, 8, 1, 4096, 128), "float16") == 2 * 128 * (2 * 32 + 2 * 8 * 4096)
    assert Attention().bound_for((1, 8, 8, 1, 4096, 128)) == "read_bandwidth"
    assert Attention().bound_for((1, 8, 1024, 1024, 64)) == "flops"


def test_five_dimensions_are_multi_head():
    tpl = templates.get("attention")
    assert tpl.parse_shape("1x8x1x4096x128") == (1, 8, 8, 1, 4096, 128)
    assert tpl.parse_shape((1, 8, 1, 4096, 128)) == (1, 8, 8, 1, 4096, 128)
    assert tpl.parse_shape("1x32x8x1x4096x128") == (1, 32, 8, 1, 4096, 128)
    # a five-dimension shape plans as its six-dimension form
    assert tpl.plan(tpl.default_config(), (1, 2, 3, 9, 8), "float32").defines == \
        tpl.plan(tpl.default_config(), (1, 2, 2, 3, 9, 8), "float32").defines


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hkv", [1, 2, 6])
def test_callable_matches_the_reference(db_path, each_cl_device, causal, hkv):
    rng = np.random.default_rng(3 + hkv)
    q = rng.standard_normal((2, 6, 5, 40)).astype(np.float32)
    k = rng.standard_normal((2, hkv, 19, 40)).astype(np.float32)
    v = rng.standard_normal((2, hkv, 19, 40)).astype(np.float32)
    got = tunesvc.attention(q, k, v, causal=causal, scale=0.3, device=each_cl_device.info, db=str(db_path))
    want = attention_reference(q, k, v, 0.3, causal)
    assert got.shape == q.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    other = attention_reference(q, k, v, 0.3, not causal)
    assert np.abs(got - other).max() > 1e-2  # the mask matters on this shape


def test_grouped_heads_read_their_own_kv_head(db_path):
    """Query heads 0-2 of a group of 3 see KV head 0 and heads 3-5 KV head 1, as repeat_kv lays them out."""
    rng = np.random.default_rng(5)
    q = rng.standard_normal((1, 6, 1, 16)).astype(np.float32)
    k, v = (rng.standard_normal((1, 2, 7, 16)).astype(np.float32) for _ in range(2))
    got = tunesvc.attention(q, k, v)
    repeated = attention_reference(q, np.repeat(k, 3, axis=1), np.repeat(v, 3, axis=1), 0.25, False)
    np.testing.assert_allclose(got, repeated, rtol=1e-5, atol=1e-6)


def test_float16_where_the_device_lacks_it_runs_in_float32(db_path, cl_no_fp16):
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal(s).astype(np.float16) for s in ((1, 4, 2, 32), (1, 2, 33, 32), (1, 2, 33, 32)))
    got = tunesvc.attention(q, k, v, causal=True, device=cl_no_fp16, db=str(db_path))
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, attention_reference(q, k, v, 32**-0.5, True), rtol=2e-3, atol=2e-3)


def test_callable_default_scale(db_path):
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, 1, 1, 16), (1, 1, 7, 16), (1, 1, 7, 16)))
    np.testing.assert_allclose(tunesvc.attention(q, k, v), attention_reference(q, k, v, 0.25, False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shapes,says", [
    (((1, 1, 2, 8), (1, 1, 3, 4), (1, 1, 3, 4)), "k and v of shape (1, Hkv, KV, 8)"),
    (((1, 2, 8), (1, 2, 8), (1, 2, 8)), "non-empty q (B, Hq, Q, D)"),
    (((1, 1, 2, 8), (1, 1, 3, 8), (1, 1, 4, 8)), "k and v of shape"),
    (((1, 8, 2, 8), (1, 3, 5, 8), (1, 3, 5, 8)), "Hq=8 is not a multiple of Hkv=3"),
])
def test_callable_rejects_bad_layouts_in_one_line(db_path, shapes, says):
    q, k, v = (np.zeros(s, np.float32) for s in shapes)
    with pytest.raises(UsageError) as e:
        tunesvc.attention(q, k, v)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_causal_needs_q_at_most_kv():
    with pytest.raises(InvalidShapeError, match="Q <= KV"):
        templates.get("attention_causal").parse_shape("1x1x8x4x16")
    assert templates.get("attention").parse_shape("1x1x8x4x16") == (1, 1, 1, 8, 4, 16)


@pytest.mark.parametrize("shape,says", [("1x8x1x4096x512", "D <= 256"), ("1x8x1x4096", "BxHqxHkvxQxKVxD"),
                                        ("1x8x0x64x64", "must be >= 1"), ("1x8x9x8x64", "Q <= KV"),
                                        ("1x8x3x1x64x64", "Hq=8 query heads are not a multiple of Hkv=3 KV heads")])
def test_cli_bad_shape_exits_2_with_one_line(db_path, shape, says):
    r = CliRunner().invoke(main, ["tune", "attention_causal", "--shape", shape, "--db", str(db_path)])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1
    assert says in r.output
    assert not db_path.exists()
