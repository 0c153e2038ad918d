"""tunesvc: a hardware-agnostic kernel autotuner.

``lookup`` and the ready kernels are imported lazily: ``import tunesvc`` costs
no driver and no optuna.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["lookup", "tune", "matmul", "attention", "reduce", "run_tuned", "__version__"]


def __getattr__(name: str):
    if name == "lookup":
        from .lookup import lookup

        return lookup
    if name == "tune":
        from .tuner import tune

        return tune
    if name in ("matmul", "attention", "reduce", "run_tuned"):
        from . import kernels

        return getattr(kernels, name)
    raise AttributeError(f"module 'tunesvc' has no attribute {name!r}")
