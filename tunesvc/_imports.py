"""Lazy imports of optional or heavy dependencies, with a message that says what to install."""

from __future__ import annotations

import importlib

from .errors import MissingDependencyError

_HINTS = {
    "optuna": "pip install optuna",
    "pyopencl": "pip install pyopencl (and a driver: pip install 'tunesvc[intel]' for the CPU)",
    "pycuda": "pip install 'tunesvc[cuda]' on a machine with an NVIDIA GPU and the CUDA toolkit",
}


def require(module: str):
    """Import and return ``module``, or raise MissingDependencyError naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise MissingDependencyError(f"{module} is needed here but not installed ({e}); {_HINTS.get(top, f'pip install {top}')}") from None
