"""gemv_q: y = x·Wᵀ for a few activation rows against a weight matrix quantized in groups along K.

Two templates share one source: ``gemv_q`` (symmetric codes) and ``gemv_q_zp`` (a zero point
per group besides its scale): the zero points change what is computed and what is read, so they
are part of the problem key, never a tuned parameter. The shape is ``BxNxKxBITSxG``: B
activation rows (1-16: decode and small-batch speculative decode), W of N rows (outputs) by K
columns (inputs), as a framework's ``Linear.weight``; codes of BITS = 8 or 4 bits, one scale
per group of G = 32, 64 or 128 consecutive weights of a row. The dtype is the scales' storage,
float32 or float16 (float16 scales are read with ``vload_half``, core OpenCL, so every device
takes them). x, y and the accumulation are float32. The packing is that of
:mod:`tunesvc.kernels.quant` (``quantize`` makes it from a float matrix), documented in
gemv_q.cl: per row, int8 codes, or int4 codes two per byte with the even weight in the low
nibble; w = (q - z)·s with z = 0 (int8) or 8 (int4) without zero points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidShapeError
from ..types import Config
from .base import DTYPES, BufferSpec, Constraint, Context, KernelTemplate, Launch, Offset, Param, Plan, ceil_div, derived, pow2_ceil

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
MAX_BATCH = 16
ROW_BLOCK = 4096  # rows of W dequantized at a time by the float64 reference


def row_bytes(k: int, bits: int) -> int:
    """Bytes of one packed row of K weights."""
    return k if bits == 8 else (k + 1) // 2


def groups(k: int, g: int) -> int:
    """Groups per row (the last one shorter when G does not divide K)."""
    return ceil_div(k, g)


def pack_codes(codes: np.ndarray, bits: int, signed: bool = False) -> np.ndarray:
    """Codes (N, K) of the format's range into the packed layout: int8 (``signed``) or uint8
    bytes for 8 bits; for 4 bits two per byte, the even weight in the low nibble."""
    codes = np.asarray(codes)
    if bits == 8:
        return codes.astype(np.int8 if signed else np.uint8)
    if codes.shape[1] % 2:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], 1), codes.dtype)], axis=1)
    c = codes.astype(np.uint8)
    return c[:, 0::2] | (c[:, 1::2] << 4)


def unpack_codes(packed: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The codes (N, K) of a packed array, as int16."""
    if bits == 8:
        return packed.astype(np.int16)
    out = np.empty((packed.shape[0], 2 * packed.shape[1]), np.int16)
    out[:, 0::2] = packed & 15
    out[:, 1::2] = packed >> 4
    return out[:, :k]


def _run(c: Config, bits: int) -> int:
    """Weights per run of one work-item (VB bytes)."""
    return c["VB"] * (1 if bits == 8 else 2)


def _chunk_groups(c: Config, shape) -> int:
    return ceil_div(groups(shape[2], shape[4]), c["SPLIT"])


def _work_items(c: Config) -> int:
    return c["RPG"] // c["RPW"] * c["WPR"]


def _local_bytes(c: Config, shape) -> int:
    b, n, k, bits, g = shape
    xs = 4 * b * _chunk_groups(c, shape) * g if c["XL"] else 0
    red = 4 * _work_items(c) * c["RPW"] * b if c["WPR"] > 1 else 0
    return xs + red


def _fits_work_group(c: Config, x: Context) -> bool:
    wg = _work_items(c)
    return wg <= x.known_device.max_work_group_size and wg <= x.known_device.max_work_item_sizes[0]


def _both_units_busy(c: Config, x: Context) -> bool:
    """At least two work-groups (every compute unit of a small CPU gets one), unless the
    config is the one-row default."""
    n = x.shape[1]
    return (c["RPG"] == 1 and c["SPLIT"] == 1) or ceil_div(n, c["RPG"]) * c["SPLIT"] >= 2


def _constraints(zero_points: bool) -> tuple[Constraint, ...]:
    """The named predicates of a config; ``zero_points`` is the template's (symmetric int8 has
    z = 0, so subtracting z once per group or per weight is the same kernel there)."""
    return (
        Constraint("rows_per_item_divide_group", lambda c, x: c["RPG"] % c["RPW"] == 0),
        Constraint("row_step_within_group", lambda c, x: c["WPR"] * _run(c, x.shape[3]) <= x.shape[4]),
        Constraint("nibble_planes_only_for_int4", lambda c, x: c["UNPACK"] == 0 or x.shape[3] == 4),
        # symmetric int8 has z = 0: nothing to subtract either way
        Constraint("zero_sum_needs_a_zero_point", lambda c, x: c["ZSUM"] == 0 or x.shape[3] == 4 or zero_points),
        Constraint("rows_per_group_not_beyond_n", lambda c, x: c["RPG"] == 1 or c["RPG"] <= pow2_ceil(x.shape[1])),
        Constraint("every_split_has_groups", lambda c, x: c["SPLIT"] == 1 or
                   (c["SPLIT"] - 1) * _chunk_groups(c, x.shape) < groups(x.shape[2], x.shape[4])),
        # tot and part, RPW x B x run floats each: beyond this they no longer stay near the core
        Constraint("registers_bounded", lambda c, x: c["RPW"] * x.shape[0] * _run(c, x.shape[3]) <= 256),
        Constraint("both_units_busy", _both_units_busy),
        Constraint("work_group_size", _fits_work_group, needs_device=True),
        Constraint("local_memory", lambda c, x: _local_bytes(c, x.shape) <= x.known_device.local_mem_size, needs_device=True),
        # the CPU path's option (GPUs take one group at a time): no duplicate configs elsewhere
        Constraint("scale_blocks_on_cpus", lambda c, x: c["GB"] == 1 or x.known_device.device_type == "cpu", needs_device=True),
        # a CPU streams a row best in one work-item: shared rows measured 2-5x slower on both CPU
        # drivers (runs too short to vectorise, a local-memory sum per row), so they are not searched
        # XQ=1: x rounded to 16 bits and integer pair sums, written for CPUs' vector units
        Constraint("rounded_x_on_cpus", lambda c, x: c["XQ"] == 0 or x.known_device.device_type == "cpu", needs_device=True),
        # pairs need two lanes; int4's runs as nibble planes; the zero point subtracted as shorts
        # (ZSUM's float sums of x are not used) and x read from the first pass (not staged)
        Constraint("rounded_x_in_pairs", lambda c, x: c["XQ"] == 0 or (
            c["VB"] >= 2 and c["ZSUM"] == 0 and c["XL"] == 0 and (x.shape[3] == 8 or c["UNPACK"] == 1))),
        Constraint("whole_rows_on_cpus", lambda c, x: c["WPR"] == 1 or x.known_device.device_type != "cpu", needs_device=True),
    )


class GemvQ(KernelTemplate):
    """Quantized-weight matrix-vector product (int8 / int4 in groups, float accumulation)."""

    name = "gemv_q"
    description = "y = x·Wᵀ, W symmetric int8 or int4 in groups along K with scales (shape BxNxKxBITSxG)"
    zero_points = False
    source_file = str(Path(__file__).with_name("gemv_q.cl"))
    kernel_names = ("gemv_q", "gemv_q_prep", "gemv_q_combine")
    dims = ("B", "N", "K", "BITS", "G")
    dtypes = ("float32", "float16")  # of the scales
    default_shape = (1, 4096, 4096, 4, 32)
    bound = "read_bandwidth"  # reads every weight once, writes B·N floats
    params = (
        Param("RPG", (1, 2, 4, 8, 16, 32, 64), 1, "rows of W per work-group"),
        Param("RPW", (1, 2, 4), 1, "rows of W per set of work-items (they share each load of x)"),
        Param("WPR", (1, 2, 4, 8, 16, 32, 64), 1, "work-items per row, on neighbouring runs of K"),
        Param("VB", (1, 2, 4, 8, 16), 8, "bytes of weights per load of a work-item (a run)"),
        Param("SPLIT", (1, 2, 4, 8, 16), 1, "work-groups per row along K; above 1 a second pass adds them"),
        Param("UNPACK", (0, 1), 0, "int4: 0 unpacks each byte's two weights in order; 1 into a plane of low and one of high nibbles, x permuted to match by a first pass"),
        Param("ZSUM", (0, 1), 0, "0: subtract the zero point from each code; 1: raw codes, z·sum(x) once per group (sums from the first pass)"),
        Param("XL", (0, 1), 0, "stage the split's slice of x in local memory"),
        Param("UR", (0, 1), 0, "1: a group's runs unrolled (PoCL ran int8 9-15% faster so, Intel's runtime up to 12% slower)"),
        Param("GB", (1, 4), 1, "CPUs: groups per step of the group loop, their scales read and converted as one vector"),
        Param("XQ", (0, 1), 0, "CPUs: 1 rounds x to 16-bit integers per group (a first pass) and sums integer products in pairs, scaled once per group"),
    )
    constraints = _constraints(zero_points=False)

    def validate_shape(self, shape) -> None:
        b, n, k, bits, g = shape
        want = "BxNxKxBITSxG"
        if bits not in BITS:
            raise InvalidShapeError(f"{self.name}: BITS={bits}; use 4 or 8 ({want}, e.g. 1x4096x4096x4x32)")
        if g not in GROUP_SIZES:
            raise InvalidShapeError(f"{self.name}: group size G={g}; use one of {', '.join(map(str, GROUP_SIZES))} ({want})")
        if b > MAX_BATCH:
            raise InvalidShapeError(f"{self.name}: batch B={b} is above {MAX_BATCH}; a larger batch is a matmul ({want})")

    def check_dtype(self, dtype: str, device=None) -> str:
        """float16 scales are converted from their bits, so they need no cl_khr_fp16."""
        return super().check_dtype(dtype, None)

    def plan(self, config: Config, shape, dtype: str) -> Plan:
        b, n, k, bits, g = shape
        zp = int(self.zero_points)
        ng, split = groups(k, g), config["SPLIT"]
        buffers = [BufferSpec("X", (b, k), np.float32, "in"),
                   BufferSpec("W", (n, row_bytes(k, bits)), np.int8 if bits == 8 and not zp else np.uint8, "in"),
                   BufferSpec("S", (n, ng), DTYPES[dtype][0], "in"),
                   BufferSpec("Y", (b, n), np.float32, "out")]
        args = ["X", Offset("X"), "W", Offset("W"), "S", Offset("S")]
        if zp:
            buffers.append(BufferSpec("Z", (n, ng), np.uint8, "in"))
            args += ["Z", Offset("Z")]
        launches = []
        if config["XQ"]:
            buffers += [BufferSpec("XQS", (b, k), np.int16, "scratch"), BufferSpec("XC", (b, ng), np.float32, "scratch")]
            launches.append(Launch("gemv_q_prep", (ceil_div(b * ng, 64) * 64,), (64,), ("X", Offset("X"), "XQS", "XC")))
            args += ["XQS", "XC"]
        elif config["UNPACK"] or config["ZSUM"]:
            buffers += [BufferSpec("XP", (b, k), np.float32, "scratch"), BufferSpec("XS", (b, ng), np.float32, "scratch")]
            launches.append(Launch("gemv_q_prep", (ceil_div(b * ng, 64) * 64,), (64,), ("X", Offset("X"), "XP", "XS")))
            args += ["XP", "XS"]
        wg = _work_items(config)
        main = (ceil_div(n, config["RPG"]) * split * wg,), (wg,)
        if split == 1:
            launches.append(Launch("gemv_q", *main, (*args, "Y")))
        else:
            buffers.append(BufferSpec("Ypart", (split, b, n), np.float32, "scratch"))
            launches += [Launch("gemv_q", *main, (*args, "Ypart")),
                         Launch("gemv_q_combine", (ceil_div(b * n, 64) * 64,), (64,), ("Ypart", "Y"))]
        defines = {**config, "TS_B": b, "TS_N": n, "TS_K": k, "BITS": bits, "GS": g, "ZP": zp,
                   "SCALE16": int(dtype == "float16")}
        return Plan(tuple(buffers), tuple(launches), defines)

    def make_inputs(self, shape, dtype: str, rng: np.random.Generator):
        b, n, k, bits, g = shape
        zp = int(self.zero_points)
        ng, top = groups(k, g), (1 << bits) - 1
        # Packed bytes drawn as they are: uniform bytes are two uniform int4 codes (a vocabulary
        # head, 128256 x 4096, is drawn in 2 s, not 8 through its codes)
        if bits == 8 and not zp:
            w = rng.integers(-128, 128, (n, k), dtype=np.int8)
        else:
            w = rng.integers(0, 256 if bits == 4 else top + 1, (n, row_bytes(k, bits)), dtype=np.uint8)
            if bits == 4 and k % 2:
                w[:, -1] &= 15  # the unused high nibble of an odd row is 0
        # Scales of about 1/levels, so weights are of order one and x·w sums stay moderate.
        scales = rng.uniform(0.5, 1.5, (n, ng)) / (1 << (bits - 1))
        out = {"X": rng.uniform(-1, 1, (b, k)).astype(np.float32), "W": w, "S": scales.astype(DTYPES[dtype][0])}
        if zp:
            out["Z"] = rng.integers(0, top + 1, (n, ng)).astype(np.uint8)
        return out

    def reference(self, inputs, shape):
        return {"Y": self._products(inputs, shape)}

    def _products(self, inputs, shape) -> np.ndarray:
        """x·Wᵀ in float64 (B, N), per group: sum over groups of s·(x·q) - s·z·sum(x), a block
        of rows of W at a time (a vocabulary head's weights in float64 are 4 GB, and expanding
        scales and zero points to every weight took half a minute)."""
        b, n, k, bits, g = shape
        xg, xsum = self._x_groups(inputs, shape, np.asarray(inputs["X"], np.float64))
        out = np.empty((b, n))
        for r in range(0, n, ROW_BLOCK):
            rows = slice(r, min(n, r + ROW_BLOCK))
            # int16 codes straight into einsum, which widens them exactly as it goes (5-10x faster
            # than a float64 copy of the block first)
            q = unpack_codes(inputs["W"][rows], bits, k)
            q = np.pad(q, ((0, 0), (0, xg.shape[1] * g - k))) if xg.shape[1] * g > k else q
            s, z = self._scales_zeros(inputs, shape, rows)
            dots = np.einsum("rgk,bgk->brg", q.reshape(-1, xg.shape[1], g), xg)
            out[:, rows] = (dots * s).sum(axis=2) - xsum @ (s * z).T
        return out

    def _bound(self, inputs, shape) -> np.ndarray:
        """A bound of the rounding of both unpacking strategies, |x|·(top + z)·s: subtracting z
        per weight multiplies |q - z| <= top, raw codes multiply q <= top and add z·s·sum(x)
        back. The largest code in place of each q costs one small product, not another pass over
        the weights (it is 2-6x |x|·|W|: still far below what a missed run or group moves)."""
        b, n, k, bits, g = shape
        _, xsum = self._x_groups(inputs, shape, np.abs(np.asarray(inputs["X"], np.float64)))
        s, z = self._scales_zeros(inputs, shape, slice(0, n))
        top = 128 if bits == 8 and not self.zero_points else (1 << bits) - 1
        return xsum @ (np.abs(s) * (top + z)).T

    def _x_rounding(self, inputs, shape) -> np.ndarray:
        """A bound of what XQ=1's rounding of x moves y (B, N): each x of a group is off by at most
        the group's max |x| / 65534 (half a step of max / 32767; 65000 covers the float32 rounding
        of the scale and its inverse), times |q - z|·s <= (top + z)·s for each of the group's
        weights. Allowed to every config (the check is not told the config): at the suite's shapes
        it is 0.2-1x the float bound, far below what a missed run or group moves."""
        b, n, k, bits, g = shape
        x = np.abs(np.asarray(inputs["X"], np.float64))
        xg, _ = self._x_groups(inputs, shape, x)
        step = xg.max(axis=2) * (g / 65000.0)  # (B, NG): per weight, times the group's weights
        s, z = self._scales_zeros(inputs, shape, slice(0, n))
        top = 128 if bits == 8 and not self.zero_points else (1 << bits) - 1
        return step @ (np.abs(s) * (top + z)).T

    @staticmethod
    def _x_groups(inputs, shape, x) -> tuple[np.ndarray, np.ndarray]:
        """x padded to whole groups as (B, NG, G), and its sums per group (B, NG)."""
        b, n, k, bits, g = shape
        ng = groups(k, g)
        xg = np.zeros((b, ng * g))
        xg[:, :k] = x
        xg = xg.reshape(b, ng, g)
        return xg, xg.sum(axis=2)

    def _scales_zeros(self, inputs, shape, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """The float64 scales and zero points (R, NG) of ``rows``."""
        bits = shape[3]
        s = inputs["S"][rows].astype(np.float64)
        z = inputs["Z"][rows].astype(np.float64) if self.zero_points else np.full(s.shape, 0.0 if bits == 8 else 8.0)
        return s, z

    def check(self, outputs, inputs, ref, shape, dtype) -> str | None:
        """As the base check, with the error scaled by a bound of |x|·|W| (|y| alone can be ~0
        by cancellation); the scale needs the shape, which the base's error_scale is not given."""
        got = outputs["Y"].astype(np.float64)
        if not np.all(np.isfinite(got)):
            return f"Y: {int(got.size - np.count_nonzero(np.isfinite(got)))} of {got.size} elements not finite (unwritten or overflow)"
        tol = self.tolerance(dtype, shape)
        # |got - ref| <= tol * bound + (x's rounding by XQ=1), as one relative figure
        scale = derived(ref, "bound", lambda: self._bound(inputs, shape) + self._x_rounding(inputs, shape) / tol + 1e-30)
        err = np.abs(got - ref["Y"]) / scale
        worst = float(err.max())
        if worst > tol:
            idx = np.unravel_index(int(err.argmax()), err.shape)
            return f"Y: relative error {worst:.3g} > {tol:.3g} at {tuple(int(i) for i in idx)}"
        return None

    def tolerance(self, dtype: str, shape) -> float:
        # float32 accumulation of K products (the dequantized weights are exact in float32):
        # the same bound as matmul's, whatever the format.
        k = shape[2]
        return 4 * 2.0**-24 * max(16, k) ** 0.5 * 8

    def flops(self, shape) -> float:
        b, n, k, bits, g = shape
        zp = int(self.zero_points)
        return 2.0 * b * n * k

    def bytes_moved(self, shape, dtype: str) -> float:
        """Weights, scales, zero points and x read once, y written."""
        b, n, k, bits, g = shape
        zp = int(self.zero_points)
        ng = groups(k, g)
        return float(n * row_bytes(k, bits) + n * ng * (2 if dtype == "float16" else 4) + n * ng * zp + 4 * b * k + 4 * b * n)


class GemvQZp(GemvQ):
    """Quantized-weight matrix-vector product with a zero point per group: w = (q - z)·s."""

    name = "gemv_q_zp"
    description = "y = x·Wᵀ, W int8 or int4 in groups along K with scales and zero points (shape BxNxKxBITSxG)"
    zero_points = True
    constraints = _constraints(zero_points=True)
