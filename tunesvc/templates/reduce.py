"""Reductions over the last axis of a (rows, cols) array: sum, max, mean, sum of squares.

One template per operation (``reduce_sum``, ``reduce_max``, ``reduce_mean``,
``reduce_sumsq``): the operation decides what is computed, so it is part of
the problem key, never a tuned parameter. A whole-array reduction is the
shape ``1xN``. Accumulation and the output are float32; the input is float32
or float16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..types import Config
from .base import DTYPE_BYTES, DTYPES, BufferSpec, Constraint, Context, KernelTemplate, Launch, Offset, Param, Plan, ceil_div

#: operation name -> the OP define of reduce.cl
OPS = {"sum": 0, "max": 1, "mean": 2, "sumsq": 3}


def _row_threads(c: Config) -> int:
    return c["WG"] // c["RPG"]


def _no_idle_threads(c: Config, x: Context) -> bool:
    """A row's work-items all get at least one vector of columns (else a smaller WG is the same and cheaper)."""
    cols = x.shape[1]
    per_split = ceil_div(cols, c["SPLIT"])
    return _row_threads(c) == 1 or per_split >= _row_threads(c) * c["VW"] // 2


class Reduce(KernelTemplate):
    """Row reduction with float accumulation; one or two passes."""

    op: str = "sum"
    # absolute, so subclasses defined elsewhere (tests, users) still find it
    source_file = str(Path(__file__).with_name("reduce.cl"))
    kernel_names = ("reduce_rows", "reduce_final")
    dims = ("R", "C")
    dtypes = ("float32", "float16")
    default_shape = (4096, 4096)
    bound = "read_bandwidth"  # reads the input once, writes one value per row
    params = (
        Param("WG", (1, 4, 16, 64, 256), 64, "work-items per work-group"),
        Param("EPT", (1, 2, 4, 8), 1, "vectors each work-item loads per loop step"),
        Param("VW", (1, 2, 4, 8), 1, "vector width of the loads"),
        Param("RPG", (1, 2, 4, 16, 64), 1, "rows per work-group (for short rows)"),
        Param("SPLIT", (1, 4, 16, 64), 1, "work-groups per row; above 1 a second pass combines the partials"),
    )
    constraints = (
        Constraint("rows_per_group_within_group", lambda c, x: c["RPG"] <= c["WG"]),
        Constraint("split_only_one_row_per_group", lambda c, x: c["SPLIT"] == 1 or c["RPG"] == 1),
        Constraint("rows_per_group_not_beyond_rows", lambda c, x: c["RPG"] == 1 or c["RPG"] <= x.shape[0]),
        Constraint("split_not_beyond_row", lambda c, x: c["SPLIT"] == 1 or x.shape[1] >= c["SPLIT"] * c["VW"] * 64),
        Constraint("threads_have_work", _no_idle_threads),
        Constraint("work_group_size", lambda c, x: c["WG"] <= x.known_device.max_work_group_size and c["WG"] <= x.known_device.max_work_item_sizes[0], needs_device=True),
    )

    def plan(self, config: Config, shape, dtype: str) -> Plan:
        rows, cols = shape
        wg, split = config["WG"], config["SPLIT"]
        groups = ceil_div(rows, config["RPG"]) * split
        first_out = "partials" if split > 1 else "out"
        launches = [Launch("reduce_rows", (groups * wg,), (wg,), ("x", Offset("x"), first_out))]
        buffers = [BufferSpec("x", (rows, cols), DTYPES[dtype][0], "in"), BufferSpec("out", (rows,), np.float32, "out")]
        if split > 1:
            final_wg = 64
            launches.append(Launch("reduce_final", (ceil_div(rows, final_wg) * final_wg,), (final_wg,), ("partials", "out")))
            buffers.append(BufferSpec("partials", (rows, split), np.float32, "scratch"))
        defines = {**config, "TS_R": rows, "TS_C": cols, "OP": OPS[self.op], "TS_FP16": int(dtype == "float16")}
        return Plan(tuple(buffers), tuple(launches), defines)

    def make_inputs(self, shape, dtype: str, rng: np.random.Generator):
        # Small integers make every sum exact in float32 whatever the order of the adds (all
        # partial sums stay below 2^24 for rows up to ~1.8M elements), so a kernel that skips or
        # repeats elements cannot hide inside a rounding tolerance. Max needs distinct values.
        if self.op == "max":
            x = rng.uniform(-1, 1, shape)
        else:
            x = rng.integers(-3, 4, shape).astype(np.float64)
        return {"x": x.astype(DTYPES[dtype][0])}

    def reference(self, inputs, shape):
        x = inputs["x"].astype(np.float64)
        fn = {"sum": lambda a: a.sum(axis=1), "max": lambda a: a.max(axis=1),
              "mean": lambda a: a.mean(axis=1), "sumsq": lambda a: (a * a).sum(axis=1)}[self.op]
        return {"out": fn(x)}

    def tolerance(self, dtype: str, shape) -> float:
        # Exact sums (see make_inputs); the mean's one division and the float32 output round once.
        return 2.0**-22

    def flops(self, shape) -> float:
        rows, cols = shape
        return float(rows * cols * (2 if self.op == "sumsq" else 1))

    def bytes_moved(self, shape, dtype: str) -> float:
        rows, cols = shape
        return float(rows * cols * DTYPE_BYTES[dtype] + rows * 4)


class ReduceSum(Reduce):
    """Sum over the last axis (whole array: shape 1xN)."""

    name = "reduce_sum"
    op = "sum"


class ReduceMax(Reduce):
    """Maximum over the last axis (whole array: shape 1xN)."""

    name = "reduce_max"
    op = "max"


class ReduceMean(Reduce):
    """Mean over the last axis (whole array: shape 1xN)."""

    name = "reduce_mean"
    op = "mean"


class ReduceSumsq(Reduce):
    """Sum of squares over the last axis (whole array: shape 1xN)."""

    name = "reduce_sumsq"
    op = "sumsq"
