"""tunesvc: a hardware-agnostic kernel autotuner.

``import tunesvc`` costs no driver and no optuna: ``lookup`` needs only numpy
and sqlite3; ``tune`` and the ready kernels are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

# Bound eagerly: the submodule of the same name would otherwise shadow the function.
from .lookup import lookup  # noqa: E402

__all__ = ["lookup", "tune", "matmul", "attention", "reduce", "gemv_q", "quantize", "QuantizedMatrix", "run_tuned", "__version__"]


if TYPE_CHECKING:  # what type checkers see of the names imported on first use
    from .kernels import QuantizedMatrix, attention, gemv_q, matmul, quantize, reduce, run_tuned
    from .tuning.tuner import tune


def __getattr__(name: str) -> Any:
    if name == "tune":
        from .tuning.tuner import tune

        return tune
    if name in ("matmul", "attention", "reduce", "gemv_q", "quantize", "QuantizedMatrix", "run_tuned"):
        from . import kernels

        return getattr(kernels, name)
    raise AttributeError(f"module 'tunesvc' has no attribute {name!r}")
