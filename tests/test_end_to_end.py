"""The numpy-facing calls as a framework uses them: repeated, on fresh arrays each time, on every
usable OpenCL driver; CPU devices use the caller's arrays in place, and a repeated call builds,
allocates and resolves nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import tunesvc
import tunesvc.templates
from tunesvc import kernels
from tunesvc.templates.attention import attention_reference
from tunesvc.types import Config

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "saxpy.py")


@pytest.fixture(autouse=True)
def _fresh(db_path):
    """No tuned records (default configs, PACKB=1 so matmul's scratch panel is used) and no
    prepared problems carried from another test."""
    kernels.clear_cache()
    yield
    kernels.clear_cache()


def _rng(seed=0):
    return np.random.default_rng(seed)


def _mm_ref(a, b):
    return a.astype(np.float64) @ b.astype(np.float64)


def test_repeated_matmul_is_right_and_leaves_earlier_results_alone(each_cl_device):
    rng = _rng()
    m, k, n = 67, 45, 93  # a multiple of no tile
    results = []
    for _ in range(3):
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = tunesvc.matmul(a, b, device=each_cl_device)
        assert c.shape == (m, n) and c.dtype == np.float32 and c.flags.c_contiguous and c.flags.writeable
        np.testing.assert_allclose(c, _mm_ref(a, b), rtol=1e-4, atol=1e-4)
        results.append((c, c.copy()))
    sq = rng.standard_normal((k, k)).astype(np.float32)
    np.testing.assert_allclose(tunesvc.matmul(sq, sq, device=each_cl_device), _mm_ref(sq, sq), rtol=1e-4, atol=1e-4)
    for c, kept in results:
        np.testing.assert_array_equal(c, kept)  # a later call wrote into none of them
    assert len({id(c) for c, _ in results}) == 3 and not np.shares_memory(results[0][0], results[1][0])


def test_inputs_of_any_layout_or_dtype_are_converted_once(each_cl_device):
    rng = _rng(1)
    big = rng.standard_normal((40, 62)).astype(np.float32)
    a, b = big[::2, 1:39:2], big[:19, :31].T.copy().T  # strided, and a Fortran-ordered array
    assert not a.flags.c_contiguous and not b.flags.c_contiguous
    np.testing.assert_allclose(tunesvc.matmul(a, b, device=each_cl_device), _mm_ref(a, b), rtol=1e-4, atol=1e-4)
    ro = np.ascontiguousarray(a)
    ro.flags.writeable = False  # a read-only array is used in place too
    np.testing.assert_allclose(tunesvc.matmul(ro, b, device=each_cl_device), _mm_ref(a, b), rtol=1e-4, atol=1e-4)
    a64, b64 = rng.standard_normal((20, 19)), rng.standard_normal((19, 31))  # float64: the plan's dtype once
    out = tunesvc.run_tuned("matmul", {"A": a64, "B": b64}, (20, 31, 19), "float32", device=each_cl_device)["C"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, a64 @ b64, rtol=1e-4, atol=1e-4)
    # the result of one call is the input of the next (page-aligned: in place on every CPU driver)
    c = tunesvc.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b), device=each_cl_device)
    np.testing.assert_allclose(tunesvc.matmul(c, c.T.copy(), device=each_cl_device), _mm_ref(c, c.T), rtol=1e-4, atol=1e-4)


def test_repeated_reduce_and_attention_are_right(each_cl_device):
    rng = _rng(2)
    kept = []
    for _ in range(2):
        x = rng.uniform(-1, 1, (5, 1003)).astype(np.float32)
        s = tunesvc.reduce(x, "sum", device=each_cl_device)
        np.testing.assert_allclose(s, x.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-4)
        kept.append((s, s.copy()))
        q, k, v = (rng.standard_normal(sh).astype(np.float32) for sh in ((1, 2, 3, 24), (1, 2, 37, 24), (1, 2, 37, 24)))
        o = tunesvc.attention(q, k, v, causal=True, device=each_cl_device)
        np.testing.assert_allclose(o, attention_reference(q, k, v, 24**-0.5, True), rtol=1e-5, atol=1e-5)
        kept.append((o, o.copy()))
    for got, copy in kept:
        np.testing.assert_array_equal(got, copy)


def _aligned(device, rng, shape):
    """A random array where every driver uses it in place (as a framework's allocator could make)."""
    out = device.empty(shape, np.float32)
    out[:] = rng.standard_normal(shape)
    return out


def test_a_repeated_call_builds_allocates_and_resolves_nothing(each_cl_device, monkeypatch):
    rng = _rng(3)
    spec = each_cl_device.info.id  # resolved once: a repeated call opens no device
    tunesvc.matmul(_aligned(each_cl_device, rng, (33, 17)), _aligned(each_cl_device, rng, (17, 41)), device=spec)
    calls = []
    patched = ["build", "alloc"] + (["write", "read"] if each_cl_device.info.device_type == "cpu" else [])
    for name in patched:  # on a CPU nothing is copied either: the kernels use the arrays themselves
        monkeypatch.setattr(each_cl_device, name, lambda *args, _n=name: calls.append(_n))
    monkeypatch.setattr(kernels.prepared, "open_device", lambda *args: calls.append("open_device"))
    for _ in range(2):
        a, b = _aligned(each_cl_device, rng, (33, 17)), _aligned(each_cl_device, rng, (17, 41))
        np.testing.assert_allclose(tunesvc.matmul(a, b, device=spec), _mm_ref(a, b), rtol=1e-4, atol=1e-4)
    assert calls == []


def test_cpu_devices_use_the_arrays_in_place(each_cl_device):
    if each_cl_device.info.device_type != "cpu":
        pytest.skip("only CPU devices share host memory")
    out = each_cl_device.empty((3, 5), np.float32)
    assert out.__array_interface__["data"][0] % 4096 == 0 and each_cl_device.in_place(out)
    prep = kernels.prepare("matmul", (3, 5, 7), "float32", each_cl_device)
    assert prep is kernels.prepare("matmul", (3, 5, 7), "float32", each_cl_device)  # kept, not rebuilt


def test_devices_that_copy_keep_their_buffers_and_are_right(each_cl_device, monkeypatch):
    """The GPU path (explicit copies through kept buffers), taken on whichever device is here."""
    monkeypatch.setattr(each_cl_device, "in_place", lambda array: False)
    monkeypatch.setattr(each_cl_device, "in_place_offset", lambda array: None)
    rng = _rng(4)
    allocs = []
    real_alloc = each_cl_device.alloc
    monkeypatch.setattr(each_cl_device, "alloc", lambda n: allocs.append(n) or real_alloc(n))
    outs = []
    for _ in range(3):
        a, b = (rng.standard_normal(s).astype(np.float32) for s in ((29, 13), (13, 51)))
        c = tunesvc.matmul(a, b, device=each_cl_device)
        np.testing.assert_allclose(c, _mm_ref(a, b), rtol=1e-4, atol=1e-4)
        outs.append((c, c.copy()))
    assert len(allocs) == 4  # the packed panel, A, B and C: once, on the first call
    for c, kept in outs:
        np.testing.assert_array_equal(c, kept)


def test_concurrent_calls_on_one_problem_take_turns(cl_device):
    rng = _rng(5)
    pairs = [tuple(rng.standard_normal(s).astype(np.float32) for s in ((45, 22), (22, 38))) for _ in range(8)]
    got = [None] * len(pairs)

    def work(i):
        got[i] = tunesvc.matmul(*pairs[i], device=cl_device)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (a, b), c in zip(pairs, got):
        np.testing.assert_allclose(c, _mm_ref(a, b), rtol=1e-4, atol=1e-4)


def test_arrays_a_driver_cannot_use_in_place_are_staged_afresh_each_call(each_cl_device, monkeypatch):
    """Intel's runtime uses only arrays aligned to 128 bytes in place, and no element offset reaches
    an array that starts between two elements: it is copied into a kept aligned array, rewritten
    on every call."""
    if each_cl_device.info.device_type != "cpu":
        pytest.skip("only CPU devices share host memory")
    monkeypatch.setattr(each_cl_device, "_unaligned", False)
    rng = _rng(6)
    for _ in range(3):
        x = _skewed(rng.uniform(-1, 1, (5, 300)).astype(np.float32), 1)  # 1 byte past a page
        assert not each_cl_device.in_place(x) and each_cl_device.in_place_offset(x) is None
        np.testing.assert_allclose(tunesvc.reduce(x, "sum", device=each_cl_device), x.astype(np.float64).sum(axis=1),
                                   rtol=1e-5, atol=1e-4)
    assert kernels.prepare("reduce_sum", (5, 300), "float32", each_cl_device).staged == 3


PAGE = 4096


def _skewed(array: np.ndarray, skew: int) -> np.ndarray:
    """A copy of ``array`` in a slice of a larger array that starts ``skew`` bytes past a page."""
    raw = np.empty(array.nbytes + PAGE + skew, np.uint8)
    start = -raw.__array_interface__["data"][0] % PAGE + skew
    out = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    assert out.__array_interface__["data"][0] % PAGE == skew
    return out


def _is_intel(device) -> bool:
    return "Intel" in device.info.platform


#: (template, shape, config changes from the default): every kernel that reads a caller's array,
#: in each of its bodies (matmul: pack_b, then the kernel on B itself; attention: MAP=0, MAP=1 split)
OFFSET_CASES = [
    ("matmul", (67, 93, 45), {}),
    ("matmul", (67, 93, 45), {"PACKB": 0}),
    ("reduce_sum", (5, 1003), {}),
    ("reduce_max", (3, 40000), {"SPLIT": 4, "WG": 16}),
    ("attention_causal", (1, 2, 3, 37, 24), {}),
    ("attention", (1, 2, 3, 37, 24), {"MAP": 1, "WG": 1, "SPLIT": 2}),
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_misaligned_inputs_are_read_in_place_at_an_offset_by_one_build(each_cl_device, dtype, monkeypatch):
    """Inputs 4, 16 and 64 bytes past a page (numpy's large arrays sit at 16; Intel's runtime uses
    only 128-byte-aligned memory in place) are right on every driver, and a CPU device copies none
    of them: Intel's runtime reads them from the aligned address below at an element offset,
    the other drivers use them as they are. One build serves every offset."""
    if dtype == "float16" and not each_cl_device.info.fp16:
        pytest.skip("no cl_khr_fp16")
    dev = each_cl_device
    real_build, real_write, writes = dev.build, dev.write, []
    monkeypatch.setattr(dev, "write", lambda buf, arr: writes.append(arr.nbytes) or real_write(buf, arr))
    for name, shape, changes in OFFSET_CASES:
        tpl = tunesvc.templates.get(name)
        config = Config({**tpl.default_config(), **changes})
        prep = kernels.prepare(name, shape, dtype, dev, config=config)
        assert prep.config == config  # valid for the shape, not the default in its place
        monkeypatch.setattr(dev, "build", lambda *a: pytest.fail("built again for another offset"))
        for skew in (4, 16, 64):
            inputs = {k: _skewed(v, skew) for k, v in tpl.make_inputs(shape, dtype, _rng(skew)).items()}
            out = kernels.run_tuned(name, inputs, shape, dtype, dev, config=config)
            assert tpl.check(out, inputs, tpl.reference(inputs, shape), shape, dtype) is None, (name, changes, skew)
            if _is_intel(dev):
                assert prep.offsets == {k: skew // v.itemsize for k, v in inputs.items()}
        monkeypatch.setattr(dev, "build", real_build)
        if dev.info.device_type == "cpu":
            assert prep.staged == 0 and writes == [], (name, changes)


def test_a_buffer_from_below_an_array_is_the_array_itself(each_cl_device):
    """The driver uses the aligned span below an array in place: a write to the array after
    wrapping it is what a read of the buffer sees (a copy would not see it). The array is well
    over a page: Intel's runtime uses a page or less in place at any alignment."""
    if each_cl_device.info.device_type != "cpu":
        pytest.skip("only CPU devices share host memory")
    x = _skewed(np.zeros(1 << 16, np.float32), 16)
    off = each_cl_device.in_place_offset(x)
    assert off == (4 if _is_intel(each_cl_device) else 0)
    buf = each_cl_device.wrap(x, writable=False, offset=off)
    x[:] = 7.0
    seen = np.zeros(x.nbytes + off * 4, np.uint8)
    each_cl_device.read(buf, seen)
    assert np.all(seen[off * 4:].view(np.float32) == 7.0)
    with pytest.raises(ValueError):
        each_cl_device.wrap(x, writable=True, offset=4)  # the bytes before the array are not ours to write


def test_a_template_that_takes_no_offsets_is_copied_where_it_must_be(each_cl_device):
    """A user template's kernels take no offsets (examples/saxpy.py): on Intel's runtime its
    misaligned inputs are copied into kept aligned arrays, and the results are right everywhere."""
    tpl = tunesvc.templates.get(EXAMPLE)
    rng = _rng(7)
    x, y = (_skewed(rng.uniform(-1, 1, 3001).astype(np.float32), 16) for _ in range(2))
    a = _skewed(np.array([1.5], np.float32), 16)
    out = kernels.run_tuned(tpl, {"a": a, "x": x, "y": y}, (3001,), "float32", each_cl_device)["out"]
    np.testing.assert_allclose(out, 1.5 * x.astype(np.float64) + y, rtol=1e-6, atol=1e-6)
    prep = kernels.prepare(tpl, (3001,), "float32", each_cl_device)
    assert prep.offsets == {}
    if _is_intel(each_cl_device):
        assert prep.staged == 3
