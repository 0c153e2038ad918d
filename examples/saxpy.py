"""Example user template: SAXPY, out = a·x + y, tuned like any built-in.

    tunesvc tune examples/saxpy.py --shape 1000000 --trials 10
    tunesvc lookup examples/saxpy.py --shape 1000000

A user template is a Python file that defines ``TEMPLATE``, an instance of a
``tunesvc.templates.KernelTemplate`` subclass (see README, "User templates").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunesvc.templates import BufferSpec, Constraint, KernelTemplate, Launch, Param, Plan
from tunesvc.templates.base import DTYPE_BYTES, DTYPES


class Saxpy(KernelTemplate):
    """SAXPY: out = a·x + y over N elements."""

    name = "saxpy"
    # an absolute path: the loader does not put this module in sys.modules
    source_file = str(Path(__file__).with_name("saxpy.cl"))
    kernel_names = ("saxpy",)
    dims = ("N",)
    dtypes = ("float32", "float16")
    default_shape = (1 << 24,)
    bound = "bandwidth"
    params = (
        Param("WG", (16, 64, 256), 64, "work-items per work-group"),
        Param("VW", (1, 2, 4, 8), 1, "vector width"),
        Param("EPT", (1, 2, 4), 1, "vectors per work-item"),
    )
    constraints = (
        # a work-group should have at least one full vector per work-item
        Constraint("group_not_beyond_n", lambda c, x: c["WG"] == 16 or c["WG"] * c["VW"] * c["EPT"] <= 4 * x.shape[0]),
        Constraint("work_group_size", lambda c, x: c["WG"] <= x.device.max_work_group_size, needs_device=True),
    )

    def plan(self, config, shape, dtype):
        (n,) = shape
        per_group = config["WG"] * config["VW"] * config["EPT"]
        groups = -(-n // per_group)
        storage = DTYPES[dtype][0]
        buffers = (
            BufferSpec("a", (1,), np.float32, "in"),
            BufferSpec("x", (n,), storage, "in"),
            BufferSpec("y", (n,), storage, "in"),
            BufferSpec("out", (n,), storage, "out"),
        )
        launch = Launch("saxpy", (groups * config["WG"],), (config["WG"],), ("a", "x", "y", "out"))
        return Plan(buffers, (launch,), {**config, "TS_N": n, "TS_FP16": int(dtype == "float16")})

    def make_inputs(self, shape, dtype, rng):
        storage = DTYPES[dtype][0]
        return {"a": np.array([rng.uniform(0.5, 2.0)], np.float32),
                "x": rng.uniform(-1, 1, shape).astype(storage), "y": rng.uniform(-1, 1, shape).astype(storage)}

    def reference(self, inputs, shape):
        a = float(inputs["a"][0])
        return {"out": a * inputs["x"].astype(np.float64) + inputs["y"].astype(np.float64)}

    def flops(self, shape):
        return 2.0 * shape[0]

    def bytes_moved(self, shape, dtype):
        return 3.0 * shape[0] * DTYPE_BYTES[dtype]


TEMPLATE = Saxpy()
