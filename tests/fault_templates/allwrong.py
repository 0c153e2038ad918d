"""The fault template with only its wrong-result kernel: no config of it can ever run correctly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesvc.templates import Param

_spec = importlib.util.spec_from_file_location("tunesvc_test_faults_w", Path(__file__).with_name("faults.py"))
_faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_faults)


class AllWrong(_faults.Faults):
    """C = A - B where A + B is asked: every config fails verification."""

    name = "allwrong"
    params = (
        Param("FAULT", (4,), 4, "computes A - B"),
        Param("COPY", (1, 2), 1, "times the kernel repeats its store"),
    )


TEMPLATE = AllWrong()
