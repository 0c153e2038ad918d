"""CUDA backend on pycuda (the optional extra ``tunesvc[cuda]``)."""

from __future__ import annotations

from ..errors import MissingDependencyError


def list_devices():
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        raise MissingDependencyError("pycuda is not installed: pip install 'tunesvc[cuda]' on a machine with an NVIDIA GPU") from None
    raise MissingDependencyError("the CUDA backend is not implemented yet")
