"""OpenCL backend on pyopencl: every platform and device the ICD loader sees."""

from __future__ import annotations

import re
import time
import warnings
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendError, BuildError, LaunchError, MissingDependencyError
from .. import identity
from ..settings import cache_dir
from ..identity import normalise_vendor  # noqa: F401  (kept importable from here)
from ..types import DeviceInfo, Fingerprint
from .drivers import register_drivers
from .base import Device, Program, first_error_line, format_defines


def _cl():
    register_drivers()  # before pyopencl's ICD loader first reads its vendor list
    try:
        import pyopencl as cl
    except ImportError as e:  # pragma: no cover - pyopencl is a hard dependency
        raise MissingDependencyError("pyopencl is not installed: pip install pyopencl") from e
    return cl


#: pyopencl holds its cache's lock file only while it reads or writes one entry (milliseconds); one
#: older than this was left by a killed process, and would make every build wait a minute and fail
STALE_LOCK_SECONDS = 30.0
#: the most the binary cache may hold (MiB; ``$TUNESVC_BINARY_CACHE_MB``): each template config is one
#: entry, so a long-running tuner would otherwise fill the disk with binaries of configs it rejected
BINARY_CACHE_MB = 512
_pruned: set[str] = set()  # cache folders trimmed by this process (once each: a walk costs)


def binary_cache() -> str | bool:
    """Where pyopencl keeps built binaries for drivers without a cache of their own (Intel's
    runtime; PoCL caches its builds itself): ``<cache dir>/opencl-binaries``, or False (no cache)
    where that folder cannot be made. A lock left there by a killed process is removed first."""
    folder = cache_dir() / "opencl-binaries"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / "lock"
        if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink(missing_ok=True)
    except FileNotFoundError:  # no lock: the usual case
        pass
    except OSError:
        return False
    if str(folder) not in _pruned:
        _pruned.add(str(folder))
        prune_binary_cache(folder, _limit_bytes())
    return str(folder)


def _limit_bytes() -> int:
    import os

    text = os.environ.get("TUNESVC_BINARY_CACHE_MB", "")
    try:
        mb = float(text) if text else BINARY_CACHE_MB
    except ValueError:
        mb = BINARY_CACHE_MB  # a cache setting never stops a build
    return int(max(mb, 0.0) * 2**20)


def prune_binary_cache(folder, limit: int) -> int:
    """Trim the binary cache to three quarters of ``limit`` bytes once it holds more, oldest
    entries first (by their newest file's time); the number of entries removed. An entry removed
    while another process reads it is a cache miss there, built again (see :func:`_build`)."""
    import shutil
    from pathlib import Path

    entries = []
    for entry in Path(folder).iterdir():
        try:
            files = [entry] if entry.is_file() else [f for f in entry.rglob("*") if f.is_file()]
            stats = [f.stat() for f in files]
        except OSError:
            continue  # gone meanwhile, or unreadable: not ours to judge
        if entry.name != "lock":
            entries.append((max((st.st_mtime for st in stats), default=0.0), sum(st.st_size for st in stats), entry))
    total = sum(size for _, size, _ in entries)
    if total <= limit:
        return 0
    removed = 0
    for _, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= 0.75 * limit:
            break
        try:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except OSError:
            continue
        total -= size
        removed += 1
    return removed


def _build(cl, ctx, source: str, options: list[str]):
    """A built pyopencl program, through the binary cache; built again without it where the cache
    itself fails (a lock held past pyopencl's minute, an unreadable entry): a cache never fails a build."""
    with warnings.catch_warnings():  # Intel's compiler reports successes on stderr: not a warning of ours
        warnings.simplefilter("ignore", cl.CompilerWarning)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # pyopencl's "could not obtain cache lock"
                return cl.Program(ctx, source).build(options=options, cache_dir=binary_cache())
        except cl.Error:
            raise
        except Exception:  # noqa: BLE001 - pyopencl's cache path (its failure handler raises KeyError)
            return cl.Program(ctx, source).build(options=options, cache_dir=False)


_TYPES = {"CPU": "cpu", "GPU": "gpu", "ACCELERATOR": "accelerator"}


def _device_type(cl, dev) -> str:
    for flag, name in _TYPES.items():
        if dev.type & getattr(cl.device_type, flag):
            return name
    return "other"


def _architecture(cl, dev) -> str:
    """Best available family name: NVIDIA's compute capability, AMD's gfx name, a CPU's
    family and model; PoCL's LLVM target CPU otherwise; empty when the driver says nothing useful."""
    ext = dev.extensions
    if "cl_nv_device_attribute_query" in ext:
        try:
            return f"sm_{dev.compute_capability_major_nv}{dev.compute_capability_minor_nv}"
        except cl.Error:
            pass
    if "cl_amd_device_attribute_query" in ext:
        name = dev.name.strip()
        if name.startswith("gfx"):
            return name.split(":")[0]
    # PoCL puts the LLVM CPU name last in its version string: "... HSTR: pthread-x86_64-...-znver3"
    m = re.search(r"HSTR:\s*\S*-([A-Za-z0-9_.]+)\s*$", dev.version)
    return m.group(1) if m else ""


def _info(cl, p_idx: int, d_idx: int, platform, dev) -> DeviceInfo:
    kind = _device_type(cl, dev)
    name, vendor, arch = " ".join(dev.name.split()), normalise_vendor(dev.vendor), _architecture(cl, dev)
    if kind == "cpu":  # the chip, not the driver's view of it (Intel's runtime says vendor Intel for an AMD EPYC)
        cpu = identity.host_cpu()
        vendor = identity.cpu_vendor(name, dev.vendor, cpu)
        name = identity.cpu_hardware_name(name, cpu.get("model_name", ""))
        arch = identity.cpu_architecture(cpu) or arch
    fp = Fingerprint(
        backend="opencl",
        vendor=vendor,
        device_type=kind,
        architecture=arch,
        name=name,
        driver=identity.driver_label(platform.name, dev.driver_version),
    )
    return DeviceInfo(
        id=f"opencl:{p_idx}:{d_idx}",
        fingerprint=fp,
        platform=platform.name.strip(),
        version=dev.version.strip(),
        c_version=dev.opencl_c_version.strip(),
        compute_units=int(dev.max_compute_units),
        max_work_group_size=int(dev.max_work_group_size),
        max_work_item_sizes=tuple(int(x) for x in dev.max_work_item_sizes),
        local_mem_size=int(dev.local_mem_size),
        local_mem_type="local" if dev.local_mem_type == cl.device_local_mem_type.LOCAL else "global",
        preferred_vector_width_float=int(dev.preferred_vector_width_float),
        fp16="cl_khr_fp16" in dev.extensions,
        fp64="cl_khr_fp64" in dev.extensions or dev.double_fp_config != 0,
        global_mem_size=int(dev.global_mem_size),
        max_alloc_size=int(dev.max_mem_alloc_size),
    )


@lru_cache(maxsize=1)
def _platform_devices():
    cl = _cl()
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # no ICD installed: no OpenCL devices, not an error
        return ()
    out = []
    for p_idx, platform in enumerate(platforms):
        try:
            devices = platform.get_devices()
        except cl.Error:
            continue
        for d_idx, dev in enumerate(devices):
            out.append((_info(cl, p_idx, d_idx, platform, dev), dev))
    return tuple(out)


def list_devices() -> list[DeviceInfo]:
    return [info for info, _ in _platform_devices()]


def forget() -> None:
    """Enumerate the platforms again on the next call (``discover(refresh=True)``). The ICD
    loader reads its vendor files once per process: a driver installed since shows up only
    in a new process."""
    _platform_devices.cache_clear()


class OpenCLDevice(Device):
    dialect = "opencl"
    _PAGE = 4096  # fresh host arrays start at a page: in place on every driver

    def __init__(self, info: DeviceInfo):
        super().__init__(info)
        cl = self._cl = _cl()
        dev = next(d for i, d in _platform_devices() if i.id == info.id)
        self.ctx = cl.Context([dev])
        self.queue = cl.CommandQueue(self.ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
        # A CPU device runs kernels on host memory: buffers can be the caller's arrays themselves.
        self._shares_host = info.device_type == "cpu"
        # Intel's runtime uses a host array in place only at its base address alignment (128 bytes);
        # a fresh array at a page boundary suits every driver.
        self._align = max(64, int(dev.mem_base_addr_align) // 8)
        self._unaligned: bool | None = None  # whether unaligned arrays are used in place too: probed on first need

    def build(self, source: str, defines: Mapping[str, Any], kernel_names: Sequence[str]) -> Program:
        cl = self._cl
        t0 = time.perf_counter()
        try:
            defines = {**defines, "TS_DEVICE_CPU": int(self.info.device_type == "cpu")}
            prg = _build(cl, self.ctx, source, format_defines(defines) + ["-cl-mad-enable"])
            kernels = {name: cl.Kernel(prg, name) for name in kernel_names}
        except cl.Error as e:
            raise BuildError(first_error_line(str(e))) from None
        return Program(prg, kernels, time.perf_counter() - t0)

    def alloc(self, nbytes: int):
        cl = self._cl
        try:
            return cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE, size=max(int(nbytes), 4))
        except cl.Error as e:
            raise LaunchError(f"cannot allocate {nbytes} bytes: {e}") from None

    def write(self, buf, array: np.ndarray) -> None:
        cl = self._cl
        array = np.ascontiguousarray(array)
        if not buf.flags & cl.mem_flags.USE_HOST_PTR:
            cl.enqueue_copy(self.queue, buf, array, is_blocking=True)
            return
        # Host memory wrapped in place: numpy copies into it at 13 GB/s where Intel's runtime
        # copies at 7.5. The unmap needs no wait: later commands of the queue come after it.
        view, _ = cl.enqueue_map_buffer(self.queue, buf, cl.map_flags.WRITE_INVALIDATE_REGION, 0, (array.nbytes,),
                                        np.uint8, is_blocking=True)
        view[:] = array.reshape(-1).view(np.uint8)
        view.base.release(self.queue)

    def read(self, buf, out: np.ndarray) -> None:
        self._cl.enqueue_copy(self.queue, out, buf, is_blocking=True)

    def fill(self, buf, nbytes: int, byte: int) -> None:
        self._cl.enqueue_fill_buffer(self.queue, buf, np.uint8(byte), 0, int(nbytes)).wait()

    def run(self, program: Program, launches: Sequence, buffers: Mapping[str, Any]) -> float:
        return self.run_into(program, launches, buffers, {})

    def run_into(self, program: Program, launches: Sequence, buffers: Mapping[str, Any],
                 outputs: Mapping[str, np.ndarray]) -> float:
        """Enqueue the launches, then for each output a map of a wrapped buffer (no copy where the
        buffer is the array) or a read of another; one wait, in clWaitForEvents, on them all."""
        cl = self._cl
        try:
            events = []
            for launch in launches:
                kernel = program.kernels[launch.kernel]
                kernel.set_args(*[buffers[a] if isinstance(a, str) else a for a in launch.args])
                events.append(cl.enqueue_nd_range_kernel(self.queue, kernel, launch.global_size, launch.local_size))
            maps, done = [], list(events)
            for name, out in outputs.items():
                buf = buffers[name]
                if buf.flags & cl.mem_flags.USE_HOST_PTR:
                    view, ev = cl.enqueue_map_buffer(self.queue, buf, cl.map_flags.READ, 0, out.shape, out.dtype,
                                                     is_blocking=False)
                    maps.append(view)
                else:
                    ev = cl.enqueue_copy(self.queue, out, buf, is_blocking=False)
                done.append(ev)
            cl.wait_for_events(done)  # sleeps in the driver (and without the GIL)
            for view in maps:  # unmapping a read map writes nothing: no need to wait for it
                view.base.release(self.queue)
            return sum((e.profile.end - e.profile.start) for e in events) * 1e-9
        except cl.Error as e:
            raise LaunchError(first_error_line(str(e), errors_only=False)) from None

    def in_place(self, array: np.ndarray) -> bool:
        if not self._shares_host:
            return False
        if array.__array_interface__["data"][0] % self._align == 0:
            return True
        if self._unaligned is None:
            self._unaligned = self._unaligned_in_place()
        return bool(self._unaligned)

    def in_place_offset(self, array: np.ndarray) -> int | None:
        """0 where the array is used in place as it is; else, on a CPU device, how many elements
        past the aligned address below it the array starts (numpy's large arrays: 16 bytes past
        a page, 4 float32), where a whole number of them (None otherwise)."""
        if self.in_place(array):
            return 0
        if not self._shares_host:
            return None
        skew = array.__array_interface__["data"][0] % self._align
        return skew // array.itemsize if skew and skew % array.itemsize == 0 else None

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        if not self._shares_host:
            return np.empty(shape, dtype)
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        raw = np.empty(nbytes + self._PAGE, np.uint8)
        start = -raw.__array_interface__["data"][0] % self._PAGE
        return raw[start:start + nbytes].view(dtype).reshape(shape)

    def wrap(self, array: np.ndarray, writable: bool, offset: int = 0):
        mf = self._cl.mem_flags
        host = array
        if offset:
            # Read only: a driver that copied instead would write the bytes before the array back,
            # and they are not ours (another array's, or the allocator's). They are mapped: they lie
            # in the array's first page, the driver's alignment dividing a page.
            if writable:
                raise ValueError("only a read-only buffer may start before its array")
            host = np.asarray(_Span(array, offset * array.itemsize))
        try:
            return self._cl.Buffer(self.ctx, (mf.READ_WRITE if writable else mf.READ_ONLY) | mf.USE_HOST_PTR, hostbuf=host)
        except self._cl.Error as e:
            raise LaunchError(f"cannot use {array.nbytes} bytes of host memory in place: {e}") from None

    def _unaligned_in_place(self) -> bool:
        """Whether the driver uses an unaligned host array in place (PoCL) rather than a copy of it
        that it keeps in step around every launch (Intel's runtime: 10x slower than copying it once).
        A copy does not see a write to the array made after wrapping it. Only speed depends on
        the answer: the buffer protocol is right either way."""
        cl = self._cl
        host = np.zeros(1 << 15, np.float32)[1:]  # 4 bytes past an aligned start; Intel's runtime
        # uses arrays of a page or less in place at any alignment, so the probe is larger
        buf = cl.Buffer(self.ctx, cl.mem_flags.READ_ONLY | cl.mem_flags.USE_HOST_PTR, hostbuf=host)
        host[:] = 1.0
        seen = np.zeros_like(host)
        cl.enqueue_copy(self.queue, seen, buf, is_blocking=True)
        return bool(seen[0] == 1.0)

    def close(self) -> None:
        self.queue.finish()


class _Span:
    """The bytes from ``before`` bytes ahead of a C-contiguous array to its end, as an array
    interface numpy views (read-only); the view keeps the array alive."""

    def __init__(self, array: np.ndarray, before: int):
        self.array = array
        start = array.__array_interface__["data"][0] - before
        self.__array_interface__ = {"data": (start, True), "shape": (array.nbytes + before,), "typestr": "|u1", "version": 3}
