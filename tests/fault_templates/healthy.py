"""The fault template's healthy kernel with a small space of its own (16 configs that all work).

For the tests of resume, concurrency and shared storage: they exercise the tuner's
machinery, not a kernel, so they use a space that is quick to build and compile.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesvc.templates import Launch, Param, Plan

_spec = importlib.util.spec_from_file_location("tunesvc_test_faults", Path(__file__).with_name("faults.py"))
_faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_faults)


class Healthy(_faults.Faults):
    """C = A + B with a work-group size and a repeat count to tune."""

    name = "healthy"
    params = (
        Param("FAULT", (0,), 0, "no fault"),
        Param("COPY", (1, 2, 3, 4), 1, "times the kernel repeats its store"),
        Param("WG", (16, 32, 64, 128), 64, "work-group size"),
    )

    def plan(self, config, shape, dtype):
        base = super().plan(config, shape, dtype)
        (n,) = shape
        wg = config["WG"]
        launch = Launch("fault", global_size=(-(-n // wg) * wg,), local_size=(wg,), args=("A", "B", "C"))
        return Plan(base.buffers, (launch,), base.defines)


TEMPLATE = Healthy()
