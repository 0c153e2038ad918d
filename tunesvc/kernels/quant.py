"""Quantized weight matrices for ``gemv_q``: the layout, ``quantize`` and the typed value.

A float matrix W of N rows (outputs) by K columns (inputs), as a framework's ``Linear.weight``
(y = x·Wᵀ), is cut along K into groups of G = 32, 64 or 128 weights; each group of each row has
a scale s (float32 or float16) and, with zero points, a zero point z, and each weight a code q:

    w = (q - z) * s

* int8: ``qweight`` is (N, K) bytes; ``int8`` codes with z = 0 without zero points (llama.cpp's
  Q8_0 values), ``uint8`` codes 0..255 with them.
* int4: ``qweight`` is (N, ceil(K/2)) ``uint8``, two codes 0..15 per byte in order along the row:
  weight 2i in the low nibble of byte i, weight 2i+1 in the high one (the byte order of GPTQ's
  and MLX's packed words; llama.cpp's Q4_0 instead pairs weight j with weight j+16 within a
  block of 32); z = 8 without zero points. An odd K leaves the last high nibble 0.
* ``scales`` and ``zeros`` (uint8, values within the codes' range) are (N, ceil(K/G)), in their
  own arrays (as GPTQ, AWQ and MLX keep them; llama.cpp interleaves each block's scale with its
  codes). The last group of a row is shorter when G does not divide K.

``quantize`` rounds to the nearest code, so each weight comes back within half a step of its
stored scale, |dequantized - w| <= s/2 (and the float32 rounding of (q - z)·s, 2^-24·|w|), for
every format: float16 scales are rounded up, never down, so a group's range still fits its
2^bits - 1 steps, and the codes are made from the stored scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidShapeError, UsageError
from ..templates.gemv_q import BITS, GROUP_SIZES, groups, pack_codes, row_bytes, unpack_codes  # noqa: F401 (re-exported)

_SCALE_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous view (the caller's own array keeps its flags)."""
    v = np.ascontiguousarray(a).view()
    v.setflags(write=False)
    return v


@dataclass(frozen=True, eq=False)
class QuantizedMatrix:
    """A weight matrix (N, K) in gemv_q's layout; the constructor checks every array's shape
    and type against ``shape``, ``bits`` and ``group_size``, so weights quantized elsewhere can
    be brought in as they are."""

    qweight: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    shape: tuple[int, int]  # (N, K): the logical matrix
    bits: int
    group_size: int

    def __post_init__(self):
        n, k = _check_format(self.shape, self.bits, self.group_size)
        object.__setattr__(self, "shape", (n, k))
        want = f"a {n}x{k} int{self.bits} matrix in groups of {self.group_size}"
        ng = groups(k, self.group_size)
        q = np.asarray(self.qweight)
        wdtype = np.dtype(np.int8 if self.bits == 8 and self.zeros is None else np.uint8)
        if q.shape != (n, row_bytes(k, self.bits)) or q.dtype != wdtype:
            per_row = "K bytes per row" if self.bits == 8 else "ceil(K/2) bytes per row, two codes per byte"
            raise InvalidShapeError(f"packed weights are {q.shape} {q.dtype}; {want} needs ({n}, {row_bytes(k, self.bits)}) {wdtype} ({per_row})")
        s = np.asarray(self.scales)
        if s.shape != (n, ng) or s.dtype not in _SCALE_DTYPES:
            raise InvalidShapeError(f"scales are {s.shape} {s.dtype}; {want} needs ({n}, {ng}) float32 or float16 (N, ceil(K/G))")
        object.__setattr__(self, "qweight", _readonly(q))
        object.__setattr__(self, "scales", _readonly(s))
        if self.zeros is not None:
            z = np.asarray(self.zeros)
            if z.shape != (n, ng) or z.dtype != np.uint8:
                raise InvalidShapeError(f"zero points are {z.shape} {z.dtype}; {want} needs ({n}, {ng}) uint8 (N, ceil(K/G))")
            if int(z.max(initial=0)) >= 1 << self.bits:
                raise InvalidShapeError(f"zero points reach {int(z.max())}; int{self.bits} codes are 0..{(1 << self.bits) - 1}")
            object.__setattr__(self, "zeros", _readonly(z))

    @property
    def scale_dtype(self) -> str:
        return _SCALE_DTYPES[self.scales.dtype]

    @property
    def nbytes(self) -> int:
        """Bytes of codes, scales and zero points: what a product reads besides x."""
        return self.qweight.nbytes + self.scales.nbytes + (self.zeros.nbytes if self.zeros is not None else 0)

    def codes(self) -> np.ndarray:
        """The codes (N, K), unpacked, as int16."""
        return unpack_codes(self.qweight, self.bits, self.shape[1])

    def dequantize(self) -> np.ndarray:
        """The float32 weights (N, K) the codes stand for: (q - z) * s, as the kernel computes them."""
        n, k = self.shape
        if self.zeros is not None:
            z = self.zeros.astype(np.int16)
        else:
            z = np.full((n, groups(k, self.group_size)), 0 if self.bits == 8 else 8, np.int16)
        zk = np.repeat(z, self.group_size, axis=1)[:, :k]
        sk = np.repeat(self.scales.astype(np.float32), self.group_size, axis=1)[:, :k]
        return (self.codes() - zk).astype(np.float32) * sk


def _check_format(shape, bits: int, group_size: int) -> tuple[int, int]:
    if bits not in BITS:
        raise UsageError(f"bits={bits!r}; gemv_q takes 4 or 8")
    if group_size not in GROUP_SIZES:
        raise UsageError(f"group_size={group_size!r}; gemv_q takes one of {', '.join(map(str, GROUP_SIZES))}")
    try:
        n, k = (int(d) for d in shape)
    except (TypeError, ValueError):
        raise InvalidShapeError(f"shape {shape!r} is not (N, K)") from None
    if n < 1 or k < 1:
        raise InvalidShapeError(f"shape {shape!r}: N and K must be >= 1")
    return n, k


def quantize(w, bits: int = 4, group_size: int = 32, zero_points: bool = False, scale_dtype: str = "float32") -> QuantizedMatrix:
    """A float matrix (N, K) rounded to int8 or int4 codes in groups of ``group_size`` along K.

    Without zero points the codes are symmetric: s = max|w| / 127 (int8) or / 7 (int4; codes
    1..15 around z = 8). With them, each group's range, widened to hold 0, is cut into 2^bits - 1
    steps: s = (max - min) / (2^bits - 1), z = round(-min / s) (as AWQ and GPTQ do).
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.size == 0 or not np.issubdtype(w.dtype, np.floating):
        raise UsageError(f"quantize takes a non-empty 2-D float matrix (N, K); got {w.shape} {w.dtype}")
    n, k = _check_format(w.shape, bits, group_size)
    if scale_dtype not in ("float32", "float16"):
        raise UsageError(f"scale_dtype={scale_dtype!r}; use float32 or float16")
    if not np.all(np.isfinite(w)):
        raise UsageError("quantize: the matrix holds NaN or infinite values")
    ng = groups(k, group_size)
    wg: np.ndarray = np.full((n, ng * group_size), np.nan)
    wg[:, :k] = w
    wg = wg.reshape(n, ng, group_size)
    top = (1 << bits) - 1
    if zero_points:
        lo, hi = np.minimum(np.nanmin(wg, axis=2), 0.0), np.maximum(np.nanmax(wg, axis=2), 0.0)
        s = _stored_scales((hi - lo) / top, scale_dtype)
        z = np.clip(np.rint(-lo / s.astype(np.float64)), 0, top)
    else:
        s = _stored_scales(np.nanmax(np.abs(wg), axis=2) / (127 if bits == 8 else 7), scale_dtype)
        z = np.full((n, ng), 0.0 if bits == 8 else 8.0)
    lo_code, hi_code = (-127, 127) if bits == 8 and not zero_points else (0, top)
    q = np.clip(np.rint(wg / s.astype(np.float64)[:, :, None]) + z[:, :, None], lo_code, hi_code)
    codes = q.reshape(n, -1)[:, :k].astype(np.int64)
    zeros = z.astype(np.uint8) if zero_points else None
    return QuantizedMatrix(pack_codes(codes, bits, signed=bits == 8 and not zero_points), s, zeros, (n, k), bits, group_size)


def _stored_scales(s: np.ndarray, scale_dtype: str) -> np.ndarray:
    """Scales as stored: an all-zero group gets 1 (its codes are the zero point either way);
    float16 ones are rounded, and must not overflow."""
    s = np.where(s > 0, s, 1.0)
    if scale_dtype == "float16":
        if s.max() > np.finfo(np.float16).max:
            raise UsageError(f"quantize: a scale of {s.max():.3g} does not fit float16 (max 65504); use scale_dtype='float32'")
        # the smallest normal float16: below it a scale would lose its precision, or vanish
        s16 = np.maximum(s, np.finfo(np.float16).tiny).astype(np.float16)
        low = s16.astype(np.float64) < s  # rounded down: the group's range would overflow the codes
        s16[low] = np.nextafter(s16[low], np.float16(np.inf))
        return s16
    return s.astype(np.float32)
