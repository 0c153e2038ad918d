"""The CUDA backend's pycuda binding (the optional extra ``tunesvc[pycuda]``; ``cuda.py`` chooses).

pycuda builds from source against an installed CUDA toolkit; kernels are compiled by that
toolkit's nvcc through pycuda's SourceModule for the device's own architecture.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
import warnings
from contextlib import contextmanager
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import require
from ..errors import BackendError, BuildError, LaunchError, MissingDependencyError
from ..types import DeviceInfo
from .base import Device, Program, first_error_line, format_defines
from .cuda import gpu_info, grid_of, version_text


def _driver():
    """pycuda.driver, initialised; one-line errors say why there is no CUDA device."""
    if importlib.util.find_spec("pycuda") is None:
        raise MissingDependencyError("pycuda is not installed: pip install 'tunesvc[pycuda]' on a machine with an NVIDIA GPU and the CUDA toolkit")
    try:
        cuda = importlib.import_module("pycuda.driver")
    except ImportError as e:  # installed, but libcuda.so (the driver) cannot be loaded
        raise BackendError(f"pycuda is installed but cannot load the NVIDIA driver ({' '.join(str(e).split())}); install the NVIDIA driver") from None
    try:
        cuda.init()
    except cuda.Error as e:
        raise BackendError(f"the CUDA driver found no usable GPU: {' '.join(str(e).split())}") from None
    return cuda


def describe(cuda, index: int) -> DeviceInfo:
    """A DeviceInfo for CUDA device ``index`` from pycuda.driver's attribute queries."""
    dev = cuda.Device(index)
    attr = cuda.device_attribute
    get = dev.get_attribute
    major, minor = dev.compute_capability()
    api = version_text(cuda.get_driver_version())
    built = ".".join(str(x) for x in cuda.get_version()[:2])
    return gpu_info(index, dev.name(), (major, minor), api, f"CUDA {api} driver API, pycuda built for CUDA {built}",
                    lambda name: int(get(getattr(attr, name))), int(dev.total_memory()))


def list_devices() -> list[DeviceInfo]:
    cuda = _driver()
    return [describe(cuda, i) for i in range(cuda.Device.count())]


class CUDADevice(Device):
    dialect = "cuda"

    def __init__(self, info: DeviceInfo):
        super().__init__(info)
        cuda = self._cuda = _driver()
        self._arch = info.fingerprint.architecture
        # The primary context is the one PyTorch and the runtime API use, so buffers and
        # timings share a context with them in one process (benchmarks/gpu.py).
        self._ctx = cuda.Device(int(info.id.split(":")[1])).retain_primary_context()

    @contextmanager
    def _current(self):
        """Make this device's context current for one operation (more than one device may be open)."""
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def build(self, source: str, defines: Mapping[str, Any], kernel_names: Sequence[str]) -> Program:
        compiler = require("pycuda.compiler")
        t0 = time.perf_counter()
        with self._current():
            try:
                # no_extern_c: the prelude includes headers and marks kernels extern "C" itself.
                with warnings.catch_warnings():
                    # pycuda warns with nvcc's remarks whenever nvcc prints anything; those are
                    # not failures, and a warning must not turn into one under -W error.
                    warnings.simplefilter("ignore")
                    module = compiler.SourceModule(source, options=format_defines(defines), arch=self._arch, no_extern_c=True)
                kernels = {name: module.get_function(name) for name in kernel_names}
            except self._cuda.CompileError as e:
                raise BuildError(first_error_line(getattr(e, "stderr", "") or e, "nvcc failed")) from None
            except self._cuda.Error as e:
                raise BuildError(first_error_line(e, "nvcc failed")) from None
        return Program(module, kernels, time.perf_counter() - t0)

    def alloc(self, nbytes: int):
        with self._current():
            try:
                return self._cuda.mem_alloc(max(int(nbytes), 4))
            except self._cuda.Error as e:
                raise LaunchError(f"cannot allocate {nbytes} bytes: {e}") from None

    def write(self, buf, array: np.ndarray) -> None:
        with self._current():
            self._cuda.memcpy_htod(buf, np.ascontiguousarray(array))

    def read(self, buf, out: np.ndarray) -> None:
        with self._current():
            self._cuda.memcpy_dtoh(out, buf)

    def fill(self, buf, nbytes: int, byte: int) -> None:
        with self._current():
            self._cuda.memset_d8(buf, int(byte), int(nbytes))
            self._cuda.Context.synchronize()

    def run(self, program: Program, launches: Sequence, buffers: Mapping[str, Any]) -> float:
        cuda = self._cuda
        with self._current():
            try:
                marks = []
                for launch in launches:
                    grid, block = grid_of(launch.global_size, launch.local_size)
                    args = [buffers[a] if isinstance(a, str) else a for a in launch.args]
                    # BLOCKING_SYNC: waiting on the event sleeps instead of spinning a core.
                    start, end = cuda.Event(cuda.event_flags.BLOCKING_SYNC), cuda.Event(cuda.event_flags.BLOCKING_SYNC)
                    start.record()
                    program.kernels[launch.kernel](*args, block=block, grid=grid)
                    end.record()
                    marks.append((start, end))
                marks[-1][1].synchronize()
                return sum(end.time_since(start) for start, end in marks) * 1e-3
            except cuda.Error as e:
                # A fault (e.g. an illegal address) leaves the context unusable; say so once here.
                raise LaunchError(" ".join(str(e).split())[:300]) from None

    def close(self) -> None:
        with self._current():
            self._cuda.Context.synchronize()
        self._ctx.detach()
