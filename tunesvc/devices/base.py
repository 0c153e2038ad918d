"""The backend contract: describe a device, compile, move buffers, run and time.

A backend is small on purpose (tinygrad's ``runtime/ops_*.py``, kernel_tuner's
``backends/backend.py``): everything about *what* runs lives in templates, and
everything about *which* configs to try lives in ``tunesvc.search``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

import numpy as np

from ..types import DeviceInfo


class Program:
    """A compiled program and its kernels, each created once and reused."""

    def __init__(self, handle: Any, kernels: Mapping[str, Any], build_seconds: float = 0.0):
        self.handle = handle
        self.kernels = dict(kernels)
        self.build_seconds = build_seconds


class Device(ABC):
    """One device of one backend, opened for use."""

    #: which dialect prelude the template sources are rendered with
    dialect: str = "opencl"

    def __init__(self, info: DeviceInfo):
        self.info = info

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.id} {self.info.name!r}>"

    @abstractmethod
    def build(self, source: str, defines: Mapping[str, Any], kernel_names: Sequence[str]) -> Program:
        """Compile ``source`` with ``-D NAME=VALUE`` defines; raise BuildError with the log."""

    @abstractmethod
    def alloc(self, nbytes: int) -> Any:
        """A device buffer of at least ``nbytes`` (never zero-sized)."""

    @abstractmethod
    def write(self, buf: Any, array: np.ndarray) -> None:
        """Copy a host array into a device buffer, blocking."""

    @abstractmethod
    def read(self, buf: Any, out: np.ndarray) -> None:
        """Copy a device buffer into a host array, blocking."""

    @abstractmethod
    def fill(self, buf: Any, nbytes: int, byte: int) -> None:
        """Set every byte of a buffer (used to poison outputs before a verification run)."""

    @abstractmethod
    def run(self, program: Program, launches: Sequence, buffers: Mapping[str, Any]) -> float:
        """Enqueue the launches in order, wait on their events (no spinning) and return the
        summed kernel time in seconds as measured by the device. Raise LaunchError on failure."""

    def run_into(self, program: Program, launches: Sequence, buffers: Mapping[str, Any],
                 outputs: Mapping[str, np.ndarray]) -> float:
        """``run``, and on return each array of ``outputs`` holds what the kernels wrote to the
        buffer of its name (a wrapped one or not); the summed kernel seconds. The default reads."""
        seconds = self.run(program, launches, buffers)
        for name, out in outputs.items():
            self.read(buffers[name], out)
        return seconds

    # ---- host memory in place (devices that share it with the host: CPUs) ----------------
    def in_place(self, array: np.ndarray) -> bool:
        """Whether kernels can use this C-contiguous host array in place through ``wrap``
        (the device shares host memory and the array is aligned as its driver needs). The
        default: never, every array is copied through a device buffer."""
        return False

    def in_place_offset(self, array: np.ndarray) -> int | None:
        """For kernels that take an element offset per input: the offset at which they can read
        this C-contiguous array in place, from a buffer that starts that many elements before it
        (at an address the driver uses in place); 0 where ``in_place`` accepts the array as it
        is; None where it must be copied. The default: 0 or None, as ``in_place`` says."""
        return 0 if self.in_place(array) else None

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A fresh host array, aligned so that ``in_place`` accepts it where the device can."""
        return np.empty(shape, dtype)

    def wrap(self, array: np.ndarray, writable: bool, offset: int = 0) -> Any:
        """A buffer that is ``array`` itself (only for arrays ``in_place`` accepts, or with the
        ``offset`` of ``in_place_offset``: then the buffer starts that many elements before the
        array, and only reads are allowed): kernels read it, and write it when ``writable``;
        ``run_into`` makes their writes visible in it."""
        raise NotImplementedError(f"{type(self).__name__} copies host arrays; it cannot wrap them")

    def close(self) -> None:
        """Release driver resources; the default does nothing."""


def format_defines(defines: Mapping[str, Any]) -> list[str]:
    """Compiler flags for a dict of defines, in a stable order."""
    return [f"-D{k}={int(v) if isinstance(v, bool) else v}" for k, v in sorted(defines.items())]


def first_error_line(log: str, default: str = "", errors_only: bool = True) -> str:
    """The first compiler error of a build log, not the whole log (nor pyopencl's repeated
    headers, nor nvcc's notes); with ``errors_only`` False, the first non-empty line."""
    lines = [ln.strip() for ln in str(log).splitlines() if ln.strip()]
    if not errors_only:
        return lines[0][:300] if lines else default
    for test in (lambda ln: "error:" in ln.lower(),
                 lambda ln: ln.lower().startswith(("invalid", "unknown", "unsupported")),
                 lambda ln: "error" in ln.lower() and ":" in ln and not ln.startswith("clBuildProgram failed"),
                 lambda ln: "error" in ln.lower()):
        for line in lines:
            if test(line):
                return line[:300]
    return " ".join(lines)[:300] or default
