"""numpy in, numpy out: matmul, reduce, attention and gemv_q with the best known config of each."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

import numpy as np
from numpy.typing import ArrayLike

from ..errors import UsageError
from .prepared import run_tuned

if TYPE_CHECKING:
    from ..devices import Device
    from ..types import DeviceInfo
    from .quant import QuantizedMatrix

#: what ``device=`` takes: an id (opencl:0:0), a fingerprint key or name substring, a DeviceInfo, an
#: opened Device, or None for the default device
DeviceSpec = Union[str, "DeviceInfo", "Device", None]
#: what ``db=`` takes: a database file (None: $TUNESVC_DB or the default path)
DbSpec = Union[str, "os.PathLike[str]", None]


_FLOAT_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}


def _dtype_of(*arrays) -> str:
    dts = {a.dtype for a in arrays}
    if len(dts) != 1 or next(iter(dts)) not in _FLOAT_DTYPES:
        raise UsageError(f"arrays must all be float32 or all float16, got {sorted(str(d) for d in dts)}; convert with .astype(np.float32)")
    return _FLOAT_DTYPES[next(iter(dts))]


def matmul(a: ArrayLike, b: ArrayLike, device: DeviceSpec = None, db: DbSpec = None) -> np.ndarray:
    """``a @ b`` for 2-D float32 (or float16) arrays, with the tuned matmul kernel; a fresh array."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or 0 in a.shape or 0 in b.shape:
        raise UsageError(f"matmul needs non-empty 2-D arrays (M, K) and (K, N); got {a.shape} and {b.shape}")
    dtype = _dtype_of(a, b)
    shape = (a.shape[0], b.shape[1], a.shape[1])
    return run_tuned("matmul", {"A": a, "B": b}, shape, dtype, device, db)["C"]


def reduce(x: ArrayLike, op: str = "sum", axis: int | None = -1, device: DeviceSpec = None, db: DbSpec = None) -> np.ndarray:
    """Reduce ``x`` along ``axis`` (``None``: the whole array) with ``op`` in sum, max, mean, sumsq.

    Accumulates in float32 and returns float32 for float32 and float16 input. A
    reduction along an axis other than the last copies ``x`` with that axis moved last.
    """
    from ..templates.reduce import OPS

    if op not in OPS:
        raise UsageError(f"unknown reduce op {op!r}; use one of {list(OPS)}")
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0:
        raise UsageError(f"reduce needs a non-empty array with at least one dimension; got shape {x.shape}")
    dtype = _dtype_of(x)
    if axis is None:
        rows, cols, out_shape = 1, x.size, ()
    else:
        if not -x.ndim <= axis < x.ndim:
            raise UsageError(f"axis {axis} is out of range for an array of {x.ndim} dimension(s)")
        x = np.moveaxis(x, axis, -1)
        out_shape = x.shape[:-1]
        cols = x.shape[-1]
        rows = x.size // cols
    flat = np.ascontiguousarray(x).reshape(rows, cols)
    out = run_tuned(f"reduce_{op}", {"x": flat}, (rows, cols), dtype, device, db)["out"]
    return out.reshape(out_shape)


def attention(q: ArrayLike, k: ArrayLike, v: ArrayLike, causal: bool = False, scale: float | None = None,
              device: DeviceSpec = None, db: DbSpec = None) -> np.ndarray:
    """softmax(q·kᵀ·scale)·v for q (B, Hq, Q, D) and k, v (B, Hkv, KV, D), fused, with the tuned kernel.

    Grouped-query: Hq a multiple of Hkv, query head h reads KV head h // (Hq // Hkv) (Hkv = Hq
    is multi-head attention, Hkv = 1 multi-query). ``scale`` defaults to 1/sqrt(D). ``causal``
    masks key j for query i when j > i + KV - Q (queries aligned to the end of the keys), so it
    needs Q <= KV. float16 arrays are computed in half storage where the device has
    cl_khr_fp16, and in float32 elsewhere (the result is float16 either way).
    """
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    _check_attention_layout(q, k, v)
    dtype = _dtype_of(q, k, v)
    b, hq, nq, d = q.shape
    if scale is None:
        scale = 1.0 / float(np.sqrt(d))
    name = "attention_causal" if causal else "attention"
    inputs = {"Q": q, "K": k, "V": v, "scale": np.array([scale], dtype=np.float32)}
    shape = (b, hq, k.shape[1], nq, k.shape[2], d)
    if dtype == "float16" and not _has_fp16(device):
        inputs.update({n: inputs[n].astype(np.float32) for n in ("Q", "K", "V")})
        return run_tuned(name, inputs, shape, "float32", device, db)["O"].astype(np.float16)
    return run_tuned(name, inputs, shape, dtype, device, db)["O"]


def _check_attention_layout(q, k, v) -> None:
    """One line naming the expected shapes, for any layout the kernel cannot take."""
    want = "q (B, Hq, Q, D) and k, v (B, Hkv, KV, D) with Hq a multiple of Hkv"
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4 or 0 in q.shape or 0 in k.shape:
        raise UsageError(f"attention needs non-empty {want}; got {q.shape}, {k.shape}, {v.shape}")
    b, hq, nq, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[3] != d:
        raise UsageError(f"attention needs {want}: k and v of shape ({b}, Hkv, KV, {d}) alike; got {q.shape}, {k.shape}, {v.shape}")
    if hq % k.shape[1]:
        raise UsageError(f"attention needs {want}: Hq={hq} is not a multiple of Hkv={k.shape[1]}; got {q.shape}, {k.shape}, {v.shape}")


def _has_fp16(device) -> bool:
    from .prepared import _device

    return _device(device).info.fp16


def gemv_q(x: ArrayLike, q: QuantizedMatrix, device: DeviceSpec = None, db: DbSpec = None) -> np.ndarray:
    """``x @ W.T`` for the quantized W of ``q`` (a :class:`~tunesvc.kernels.quant.QuantizedMatrix`,
    from ``tunesvc.quantize``) and x of K (a vector) or (B, K) with B of 1 to 16, float32 (float16
    is widened); float32 accumulation, a fresh float32 array of (N,) or (B, N)."""
    from ..templates.gemv_q import MAX_BATCH
    from .quant import QuantizedMatrix

    if not isinstance(q, QuantizedMatrix):
        raise UsageError(f"gemv_q takes the weights as tunesvc.quantize(w, bits, group_size) returns them, not {type(q).__name__}")
    x = np.asarray(x)
    n, k = q.shape
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    if rows.ndim != 2 or rows.shape[1] != k or not 1 <= rows.shape[0] <= MAX_BATCH:
        raise UsageError(f"gemv_q needs x of shape ({k},) or (B, {k}) with B from 1 to {MAX_BATCH} for a {n}x{k} matrix; got {x.shape}")
    if x.dtype not in _FLOAT_DTYPES:
        raise UsageError(f"gemv_q needs float32 or float16 x, got {x.dtype}; convert with .astype(np.float32)")
    inputs = {"X": rows.astype(np.float32, copy=False), "W": q.qweight, "S": q.scales}
    if q.zeros is not None:
        inputs["Z"] = q.zeros
    name = "gemv_q" if q.zeros is None else "gemv_q_zp"
    y = run_tuned(name, inputs, (rows.shape[0], n, k, q.bits, q.group_size), q.scale_dtype, device, db)["Y"]
    return y.reshape(n) if x.ndim == 1 else y
