"""matmul: C = A·B, row-major, any M, N, K >= 1; float32, and float16 storage with float accumulation."""

from __future__ import annotations

import numpy as np

from ..types import Config
from .base import DTYPE_BYTES, DTYPES, BufferSpec, Constraint, Context, KernelTemplate, Launch, Offset, Param, Plan, Probe, ceil_div, pow2_ceil, probe_of


def _tile(c) -> tuple[int, int]:
    """Rows and columns of C per work-group."""
    return c["MDIM"] * c["WPTM"], c["NDIM"] * c["WPTN"]


def _local_bytes(c) -> int:
    return sum(_tile(c)) * c["KWG"] * 4 if c["LOCAL"] else 0


def _fits_work_group(c, ctx: Context) -> bool:
    tn, tm = c["NDIM"], c["MDIM"]
    sizes = ctx.known_device.max_work_item_sizes
    return tn * tm <= ctx.known_device.max_work_group_size and tn <= sizes[0] and tm <= sizes[1]


class Matmul(KernelTemplate):
    """Tiled, register-blocked matrix multiply C = A·B (row-major)."""

    name = "matmul"
    source_file = "matmul.cl"
    kernel_names = ("matmul", "pack_b")
    dims = ("M", "N", "K")
    dtypes = ("float32", "float16")
    default_shape = (1024, 1024, 1024)
    bound = "flops"
    params = (
        Param("MDIM", (1, 2, 4, 8, 16, 32), 4, "work-items of a work-group along M"),
        Param("NDIM", (1, 2, 4, 8, 16, 32), 8, "work-items of a work-group along N"),
        Param("KWG", (8, 16, 32), 8, "K slice staged in local memory (LOCAL=1 only)"),
        Param("WPTM", (1, 2, 4, 8), 1, "rows of C per work-item (register blocking)"),
        Param("WPTN", (1, 2, 4, 8, 16), 1, "columns of C per work-item (register blocking)"),
        Param("VW", (1, 2, 4, 8), 1, "vector width of loads of B and stores of C"),
        Param("LOCAL", (0, 1), 0, "stage tiles of A and B in local memory"),
        Param("UNROLL", (1, 2, 4, 8), 1, "unroll factor of the K loop"),
        Param("PACKB", (0, 1), 1, "copy B into contiguous panels of WPTN columns first (streams on CPUs)"),
    )
    constraints = (
        Constraint("tile_at_most_128", lambda c, x: max(_tile(c)) <= 128),
        Constraint("vector_fits_work_per_thread", lambda c, x: c["WPTN"] % c["VW"] == 0),
        Constraint("vector_divides_n", lambda c, x: x.shape[1] % c["VW"] == 0),
        Constraint("registers_bounded", lambda c, x: c["WPTM"] * c["WPTN"] <= 64),
        Constraint("pack_without_local", lambda c, x: not (c["PACKB"] and c["LOCAL"])),
        Constraint("k_tile_only_with_local", lambda c, x: c["LOCAL"] == 1 or c["KWG"] == 8),
        Constraint("unroll_within_k_tile", lambda c, x: c["LOCAL"] == 0 or c["UNROLL"] <= c["KWG"]),
        Constraint("unroll_within_k", lambda c, x: c["UNROLL"] == 1 or c["UNROLL"] <= x.shape[2]),
        Constraint("tile_not_beyond_shape", lambda c, x: _tile(c)[0] <= max(8, pow2_ceil(x.shape[0])) and _tile(c)[1] <= max(8, pow2_ceil(x.shape[1]))),
        Constraint("block_within_shape", lambda c, x: c["LOCAL"] == 1 or (
            c["WPTM"] <= x.shape[0] and (c["WPTN"] if c["PACKB"] else _tile(c)[1]) <= x.shape[1])),
        Constraint("work_group_size", _fits_work_group, needs_device=True),
        Constraint("local_memory", lambda c, x: _local_bytes(c) <= x.known_device.local_mem_size, needs_device=True),
    )

    def plan(self, config: Config, shape, dtype: str) -> Plan:
        m, n, k = shape
        np_dtype = DTYPES[dtype][0]
        tn, tm = config["NDIM"], config["MDIM"]
        mwg, nwg = _tile(config)
        wptn = config["WPTN"]
        b_arg = ("Bp", np.int32(0)) if config["PACKB"] else ("B", Offset("B"))  # the packed panels are our own
        main = Launch(
            "matmul",
            global_size=(ceil_div(n, nwg) * tn, ceil_div(m, mwg) * tm),
            local_size=(tn, tm),
            args=("A", Offset("A"), *b_arg, "C"),
        )
        buffers = [
            BufferSpec("A", (m, k), np_dtype, "in"),
            BufferSpec("B", (k, n), np_dtype, "in"),
            BufferSpec("C", (m, n), np_dtype, "out"),
        ]
        launches = [main]
        if config["PACKB"]:
            panels = ceil_div(n, wptn)
            buffers.append(BufferSpec("Bp", (panels, k, wptn), np_dtype, "scratch"))
            launches.insert(0, Launch("pack_b", (panels * wptn, k), (wptn, 1), ("B", Offset("B"), "Bp")))
        defines = {**config, "TS_M": m, "TS_N": n, "TS_K": k, "TS_FP16": int(dtype == "float16")}
        return Plan(tuple(buffers), tuple(launches), defines)

    def probe(self, plan: Plan, fraction: float) -> Probe | None:
        # Every work-group computes one tile of C; the first ones alone write the first tiles.
        # pack_b (when there) runs in full: the tiles read its panels.
        *before, main = plan.launches
        return probe_of(before, main, fraction)

    def make_inputs(self, shape, dtype: str, rng: np.random.Generator):
        m, n, k = shape
        np_dtype = DTYPES[dtype][0]
        return {
            "A": rng.uniform(-1, 1, (m, k)).astype(np_dtype),
            "B": rng.uniform(-1, 1, (k, n)).astype(np_dtype),
        }

    def reference(self, inputs, shape):
        return {"C": inputs["A"].astype(np.float64) @ inputs["B"].astype(np.float64)}

    def error_scale(self, inputs, ref, name):
        # |A|·|B| bounds the rounding error of every dot product; |C| alone can be ~0 by cancellation.
        return np.abs(inputs["A"].astype(np.float64)) @ np.abs(inputs["B"].astype(np.float64)) + 1e-30

    def tolerance(self, dtype: str, shape) -> float:
        k = shape[2]
        eps = {"float32": 2.0**-24, "float16": 2.0**-11}[dtype]
        # float accumulation of K products: worst case ~K·eps, typically far less; storage rounding for fp16.
        return 4 * eps * max(16, k) ** 0.5 * 8 + (2 * 2.0**-11 if dtype == "float16" else 0)

    def flops(self, shape) -> float:
        m, n, k = shape
        return 2.0 * m * n * k

    def bytes_moved(self, shape, dtype: str) -> float:
        m, n, k = shape
        return float(DTYPE_BYTES[dtype] * (m * k + k * n + m * n))
