"""The CUDA backend's cuda-python binding (the optional extra ``tunesvc[cuda]``; ``cuda.py`` chooses).

NVIDIA's ``cuda-bindings`` calls the driver API, and NVRTC compiles each program in memory for
the device's own architecture: a cubin where this NVRTC knows the architecture, else PTX for the
newest one it knows, which the driver compiles further. Everything comes as binary wheels from
PyPI (``nvidia-cuda-nvrtc`` for the compiler, ``nvidia-cuda-runtime`` for ``cuda_fp16.h``); the
NVIDIA driver (``libcuda.so``) is the one thing a machine must have.

NVRTC has no C library headers, so the ``math.h`` and ``float.h`` that the CUDA prelude
includes are given to it in memory, defining what the templates use from them.
"""

from __future__ import annotations

import importlib
import os
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import BackendError, BuildError, LaunchError, MissingDependencyError
from ..types import DeviceInfo
from .base import Device, Program, first_error_line, format_defines
from .cuda import gpu_info, grid_of, version_text

#: what NVRTC reads for ``#include <math.h>`` and ``<float.h>``: the names the templates use
HEADERS = {
    "math.h": ("#pragma once\n"
               "#ifndef INFINITY\n#define INFINITY __int_as_float(0x7f800000)\n#endif\n"
               "#ifndef NAN\n#define NAN __int_as_float(0x7fffffff)\n#endif\n"
               "#ifndef HUGE_VALF\n#define HUGE_VALF INFINITY\n#endif\n"),
    "float.h": ("#pragma once\n"
                "#define FLT_MAX 3.402823466e+38F\n#define FLT_MIN 1.175494351e-38F\n"
                "#define FLT_EPSILON 1.192092896e-07F\n#define DBL_MAX 1.7976931348623158e+308\n"
                "#define DBL_MIN 2.2250738585072014e-308\n#define DBL_EPSILON 2.2204460492503131e-16\n"),
}


def _bindings():
    """(driver, nvrtc) modules of cuda-bindings; a one-line error where they are missing."""
    try:
        return importlib.import_module("cuda.bindings.driver"), importlib.import_module("cuda.bindings.nvrtc")
    except ImportError as e:
        raise MissingDependencyError(f"cuda-python is not installed ({' '.join(str(e).split())}): pip install 'tunesvc[cuda]'") from None


def _name(result: Any) -> str:
    return getattr(result, "name", str(result))


def check(driver, result: tuple, what: str) -> Any:
    """The values a driver call returned after its status; LaunchError naming the call and
    CUDA's error name where the status is not CUDA_SUCCESS."""
    status, rest = result[0], result[1:]
    if int(status) != 0:
        try:
            err, text = driver.cuGetErrorString(status)
            detail = text.decode() if int(err) == 0 and text else ""
        except Exception:  # noqa: BLE001 - the error string is a courtesy; the name is enough
            detail = ""
        raise LaunchError(f"{what} failed: {_name(status)}" + (f" ({detail})" if detail else ""))
    return rest[0] if len(rest) == 1 else rest


@lru_cache(maxsize=1)
def _initialised():
    """The driver module after cuInit; one-line BackendErrors say why there is no GPU."""
    driver, _ = _bindings()
    try:
        (status,) = driver.cuInit(0)
    except Exception as e:  # noqa: BLE001 - cuda-bindings raises its loader's own error without libcuda
        why = "libcuda.so not found" if "NotFound" in type(e).__name__ else " ".join(str(e).split())[:200]
        raise BackendError(f"cuda-python is installed but cannot load the NVIDIA driver ({why}); install the NVIDIA driver") from None
    if int(status) != 0:
        raise BackendError(f"the CUDA driver found no usable GPU: cuInit failed: {_name(status)}")
    return driver


def _attribute(driver, dev, name: str) -> int:
    return int(check(driver, driver.cuDeviceGetAttribute(getattr(driver.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}"), dev), name))


def describe(driver, index: int) -> DeviceInfo:
    """A DeviceInfo for CUDA device ``index`` from the driver API's queries."""
    dev = check(driver, driver.cuDeviceGet(index), "cuDeviceGet")
    major, minor = (_attribute(driver, dev, f"COMPUTE_CAPABILITY_{p}") for p in ("MAJOR", "MINOR"))
    api = version_text(int(check(driver, driver.cuDriverGetVersion(), "cuDriverGetVersion")))
    name = check(driver, driver.cuDeviceGetName(256, dev), "cuDeviceGetName")
    name = name.split(b"\0", 1)[0].decode(errors="replace")
    total = int(check(driver, driver.cuDeviceTotalMem(dev), "cuDeviceTotalMem"))
    return gpu_info(index, name, (major, minor), api,
                    f"CUDA {api} driver API, cuda-python {_package_version()}, NVRTC {nvrtc_version()}",
                    lambda attr: _attribute(driver, dev, attr), total)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("cuda-bindings")
    except Exception:  # noqa: BLE001 - a version is for display only
        return "?"


def list_devices() -> list[DeviceInfo]:
    driver = _initialised()
    count = int(check(driver, driver.cuDeviceGetCount(), "cuDeviceGetCount"))
    return [describe(driver, i) for i in range(count)]


# ---- NVRTC ------------------------------------------------------------------------------------
def nvrtc_version() -> str:
    _, nvrtc = _bindings()
    try:
        status, major, minor = nvrtc.nvrtcVersion()
    except Exception as e:  # noqa: BLE001 - cuda-bindings raises its loader's own error without libnvrtc
        raise MissingDependencyError(f"NVRTC cannot be loaded ({' '.join(str(e).split())[:200]}): pip install 'tunesvc[cuda]'") from None
    return f"{major}.{minor}"


@lru_cache(maxsize=1)
def supported_architectures() -> tuple[int, ...]:
    """The compute capabilities (90 for sm_90) this NVRTC compiles for."""
    _, nvrtc = _bindings()
    nvrtc_version()  # a one-line error where libnvrtc is missing
    status, archs = nvrtc.nvrtcGetSupportedArchs()
    return tuple(sorted(int(a) for a in archs)) if int(status) == 0 else ()


def target(arch: str) -> tuple[str, bool]:
    """The ``--gpu-architecture`` value for a device of ``arch`` ("sm_90") and whether NVRTC makes
    a cubin for it: the device's own architecture where NVRTC knows it, else PTX of the newest
    architecture it knows below the device's, for the driver to compile."""
    cc = int(arch.removeprefix("sm_"))
    known = supported_architectures()
    if cc in known:
        return f"sm_{cc}", True
    older = [a for a in known if a < cc]
    if not older:
        raise BuildError(f"NVRTC {nvrtc_version()} cannot compile for {arch} (it knows {', '.join(f'sm_{a}' for a in known)})")
    return f"compute_{max(older)}", False


@lru_cache(maxsize=1)
def fp16_include() -> str | None:
    """The folder holding cuda_fp16.h: the nvidia-cuda-runtime wheel's, else a toolkit's."""
    try:
        from cuda.pathfinder import find_nvidia_header_directory

        found = find_nvidia_header_directory("cudart")
        if found:
            return str(found)
    except Exception:  # noqa: BLE001 - an older cuda-pathfinder, or none: look for a toolkit
        pass
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "include" / "cuda_fp16.h").is_file():
            return str(Path(root) / "include")
    return None


def compile_source(source: str, defines: Mapping[str, Any], arch: str) -> tuple[bytes, bool]:
    """(image, is_cubin): ``source`` compiled by NVRTC with the defines for a device of ``arch``;
    BuildError with the first error of NVRTC's log."""
    _, nvrtc = _bindings()
    gpu_arch, cubin = target(arch)
    options = [f"--gpu-architecture={gpu_arch}", *format_defines(defines)]
    include = fp16_include()
    if include:
        options.append(f"--include-path={include}")
    names = list(HEADERS)
    status, prog = nvrtc.nvrtcCreateProgram(source.encode(), b"tunesvc.cu", len(names),
                                            [HEADERS[n].encode() for n in names], [n.encode() for n in names])
    if int(status) != 0:
        raise BuildError(f"nvrtcCreateProgram failed: {_name(status)}")
    try:
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
        if int(status) != 0:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * int(size)
            nvrtc.nvrtcGetProgramLog(prog, log)
            text = log.rstrip(b"\0 ").decode(errors="replace")
            if "cuda_fp16.h" in text and include is None:
                raise BuildError("cuda_fp16.h not found for a float16 kernel: pip install 'tunesvc[cuda]' (nvidia-cuda-runtime has it) or set CUDA_HOME")
            raise BuildError(first_error_line(text, f"NVRTC failed: {_name(status)}"))
        get_size, get = (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if cubin else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        _, size = get_size(prog)
        image = b" " * int(size)
        get(prog, image)
        return image, cubin
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


# ---- launches -----------------------------------------------------------------------------------
class Buffer:
    """A device allocation, freed when the last reference goes (as pycuda's and pyopencl's are)."""

    def __init__(self, device: "CUDADevice | None", ptr: Any, nbytes: int):
        self.device: CUDADevice | None = device
        self.ptr, self.nbytes = ptr, nbytes

    def __int__(self) -> int:
        return int(self.ptr)

    def __del__(self) -> None:
        device, self.device = self.device, None
        if device is not None and not device.closed:
            try:
                with device.current():
                    device.driver.cuMemFree(self.ptr)
            except Exception:  # noqa: BLE001 - at interpreter exit the driver may be gone already
                pass


def kernel_params(args: Sequence[Any]) -> tuple[list[np.ndarray], np.ndarray]:
    """(storage, pointers) for cuLaunchKernel's ``void**``: each argument's bytes in an array of
    its own (a device pointer as uint64, a numpy scalar in its own type) and an array of their
    addresses; the storage must live until the launch is enqueued."""
    storage = []
    for a in args:
        if isinstance(a, Buffer):
            storage.append(np.array([int(a)], np.uint64))
        elif isinstance(a, np.generic):
            storage.append(np.array([a], a.dtype))
        else:
            raise LaunchError(f"kernel argument {a!r} is neither a buffer nor a numpy scalar (np.int32(5), np.float32(0.5))")
    return storage, np.array([s.ctypes.data for s in storage], np.uint64)


class CUDADevice(Device):
    dialect = "cuda"

    def __init__(self, info: DeviceInfo):
        super().__init__(info)
        self.driver = driver = _initialised()
        self.closed = False
        self._dev = check(driver, driver.cuDeviceGet(int(info.id.split(":")[1])), "cuDeviceGet")
        # The primary context is the one PyTorch and the runtime API use, so buffers and
        # timings share a context with them in one process (benchmarks/gpu.py).
        self._ctx = check(driver, driver.cuDevicePrimaryCtxRetain(self._dev), "cuDevicePrimaryCtxRetain")
        self._stream = driver.CUstream(0)
        self._modules: list[Any] = []

    @contextmanager
    def current(self) -> Iterator[None]:
        """Make this device's context current for one operation (more than one device may be open)."""
        check(self.driver, self.driver.cuCtxPushCurrent(self._ctx), "cuCtxPushCurrent")
        try:
            yield
        finally:
            self.driver.cuCtxPopCurrent()

    def build(self, source: str, defines: Mapping[str, Any], kernel_names: Sequence[str]) -> Program:
        t0 = time.perf_counter()
        image, _ = compile_source(source, defines, self.info.fingerprint.architecture)
        driver = self.driver
        with self.current():
            try:
                module = check(driver, driver.cuModuleLoadData(image), "cuModuleLoadData")  # PTX comes NUL-terminated
                self._modules.append(module)
                kernels = {name: check(driver, driver.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction {name}")
                           for name in kernel_names}
            except LaunchError as e:
                raise BuildError(str(e)) from None
        return Program(module, kernels, time.perf_counter() - t0)

    def alloc(self, nbytes: int) -> Buffer:
        with self.current():
            ptr = check(self.driver, self.driver.cuMemAlloc(max(int(nbytes), 4)), f"cuMemAlloc of {nbytes} bytes")
        return Buffer(self, ptr, int(nbytes))

    def write(self, buf: Buffer, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        with self.current():
            check(self.driver, self.driver.cuMemcpyHtoD(buf.ptr, array.ctypes.data, array.nbytes), "cuMemcpyHtoD")

    def read(self, buf: Buffer, out: np.ndarray) -> None:
        if not out.flags.c_contiguous:
            raise LaunchError("read needs a C-contiguous host array")
        with self.current():
            check(self.driver, self.driver.cuMemcpyDtoH(out.ctypes.data, buf.ptr, out.nbytes), "cuMemcpyDtoH")

    def fill(self, buf: Buffer, nbytes: int, byte: int) -> None:
        with self.current():
            check(self.driver, self.driver.cuMemsetD8(buf.ptr, int(byte), int(nbytes)), "cuMemsetD8")
            check(self.driver, self.driver.cuCtxSynchronize(), "cuCtxSynchronize")

    def _event(self) -> Any:
        # BLOCKING_SYNC: waiting on the event sleeps instead of spinning a core.
        return check(self.driver, self.driver.cuEventCreate(self.driver.CUevent_flags.CU_EVENT_BLOCKING_SYNC), "cuEventCreate")

    def run(self, program: Program, launches: Sequence, buffers: Mapping[str, Any]) -> float:
        driver = self.driver
        with self.current():
            marks = []
            try:
                for launch in launches:
                    grid, block = grid_of(launch.global_size, launch.local_size)
                    storage, pointers = kernel_params([buffers[a] if isinstance(a, str) else a for a in launch.args])
                    start, end = self._event(), self._event()
                    marks.append((start, end))
                    check(driver, driver.cuEventRecord(start, self._stream), "cuEventRecord")
                    check(driver, driver.cuLaunchKernel(program.kernels[launch.kernel], *grid, *block, 0, self._stream,
                                                        pointers.ctypes.data, 0), f"launch of {launch.kernel}")
                    check(driver, driver.cuEventRecord(end, self._stream), "cuEventRecord")
                    del storage  # the driver copied the arguments when the launch was enqueued
                check(driver, driver.cuEventSynchronize(marks[-1][1]), "cuEventSynchronize")
                return sum(float(check(driver, driver.cuEventElapsedTime(s, e), "cuEventElapsedTime")) for s, e in marks) * 1e-3
            finally:
                for s, e in marks:
                    driver.cuEventDestroy(s)
                    driver.cuEventDestroy(e)

    def close(self) -> None:
        if self.closed:
            return
        with self.current():
            self.driver.cuCtxSynchronize()
            for module in self._modules:
                self.driver.cuModuleUnload(module)
        self._modules.clear()
        self.closed = True
        self.driver.cuDevicePrimaryCtxRelease(self._dev)
