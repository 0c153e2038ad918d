"""The numpy-facing calls as a framework uses them: repeated, on fresh arrays each time, on every
usable OpenCL driver; CPU devices use the caller's arrays in place, and a repeated call builds,
allocates and resolves nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tunesvc
from tunesvc import kernels
from tunesvc.templates.attention import attention_reference


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
    monkeypatch.setattr(kernels, "open_device", lambda *args: calls.append("open_device"))
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
    """Intel's runtime uses only arrays aligned to 128 bytes in place (numpy's start 16 bytes past a
    page): the others are copied into a kept aligned array, rewritten on every call."""
    if each_cl_device.info.device_type != "cpu":
        pytest.skip("only CPU devices share host memory")
    monkeypatch.setattr(each_cl_device, "_unaligned", False)
    rng = _rng(6)
    for _ in range(3):
        big = rng.uniform(-1, 1, 5 * 300 + 1).astype(np.float32)
        x = big[1:].reshape(5, 300)  # 4 bytes past numpy's start: never aligned
        assert not each_cl_device.in_place(x)
        np.testing.assert_allclose(tunesvc.reduce(x, "sum", device=each_cl_device), x.astype(np.float64).sum(axis=1),
                                   rtol=1e-5, atol=1e-4)
