"""A template whose configs fail on purpose, one way each (see faults.cl).

Loaded as a user template (``tunesvc tune tests/fault_templates/faults.py``),
so the isolation tests drive the real CLI, the real worker and the real PoCL
device. ``COPY`` gives a second axis of healthy configs so a search has
something to continue with after each fault.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunesvc.templates import BufferSpec, KernelTemplate, Launch, Param, Plan

# Healthy last, so a grid search meets every fault before its last healthy config.
FAULTS = {"hang": 1, "segfault": 2, "exhaust": 3, "wrong": 4, "build": 5, "ok": 0}


class Faults(KernelTemplate):
    """C = A + B, with configs that hang, crash, exhaust the device, compute wrong results or fail to build."""

    name = "faults"
    # Absolute: a template loaded from a file is not in sys.modules, so its folder cannot be found from its class.
    source_file = str(Path(__file__).with_name("faults.cl"))
    kernel_names = ("fault",)
    dims = ("N",)
    default_shape = (1024,)
    bound = "bandwidth"
    params = (
        Param("FAULT", tuple(FAULTS.values()), 0, "which fault to inject (0: none)"),
        Param("COPY", (1, 2), 1, "times the healthy kernel repeats its store"),
    )

    def plan(self, config, shape, dtype):
        (n,) = shape
        np_dtype = np.float32
        buffers = [BufferSpec("A", (n,), np_dtype, "in"), BufferSpec("B", (n,), np_dtype, "in"),
                   BufferSpec("C", (n,), np_dtype, "out")]
        if config["FAULT"] == FAULTS["exhaust"]:
            # 2^60 bytes: more than any device can give in one allocation.
            buffers.append(BufferSpec("scratch", (2**58,), np_dtype, "scratch"))
        launch = Launch("fault", global_size=(-(-n // 64) * 64,), local_size=(64,), args=("A", "B", "C"))
        return Plan(tuple(buffers), (launch,), {**config, "TS_N": n})

    def make_inputs(self, shape, dtype, rng):
        (n,) = shape
        return {"A": rng.uniform(-1, 1, n).astype(np.float32), "B": rng.uniform(-1, 1, n).astype(np.float32)}

    def reference(self, inputs, shape):
        return {"C": inputs["A"].astype(np.float64) + inputs["B"].astype(np.float64)}

    def flops(self, shape):
        return float(shape[0])

    def bytes_moved(self, shape, dtype):
        return 12.0 * shape[0]


TEMPLATE = Faults()
