"""CUDA backend: NVIDIA GPUs through one of two Python bindings, from the same template sources.

- **cuda-python** (``pip install 'tunesvc[cuda]'``): NVIDIA's ``cuda-bindings`` for the driver
  API and NVRTC from PyPI's ``nvidia-cuda-nvrtc`` wheel. Binary wheels only: no CUDA toolkit,
  no compiler; the NVIDIA driver is all a machine needs (``cuda_nvrtc.py``).
- **pycuda** (``pip install 'tunesvc[pycuda]'``): builds from source against an installed CUDA
  toolkit and compiles kernels with its nvcc (``cuda_pycuda.py``).

Where both are installed cuda-python is used; ``TUNESVC_CUDA_BINDING=pycuda`` (or
``cuda-python``) chooses. Either way a template is rendered with dialect/cuda.h, a launch's
global size counts work-items as in OpenCL (the grid is global / local per dimension), kernel
times come from CUDA events, and a device's fingerprint is the same, so results tuned through
one binding answer lookups through the other.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from ..errors import BackendError, LaunchError, MissingDependencyError
from ..types import DeviceInfo, Fingerprint
from .base import Device

_NVIDIA_VERSION_FILE = Path("/proc/driver/nvidia/version")

#: binding name -> (module that must be importable, tunesvc module using it), in order of preference
BINDINGS = {"cuda-python": ("cuda.bindings", "tunesvc.devices.cuda_nvrtc"),
            "pycuda": ("pycuda", "tunesvc.devices.cuda_pycuda")}
CHOOSE = "TUNESVC_CUDA_BINDING"
INSTALL = ("pip install 'tunesvc[cuda]' (NVIDIA's cuda-python and NVRTC as binary wheels: "
           "the NVIDIA driver is all it needs), or 'tunesvc[pycuda]' where the CUDA toolkit is installed")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that is absent or cannot be imported
        return False


def binding_name() -> str:
    """The binding this process uses: the one ``$TUNESVC_CUDA_BINDING`` names, else the first
    installed; a one-line error says what to install where there is none."""
    chosen = os.environ.get(CHOOSE, "").strip()
    if chosen:
        if chosen not in BINDINGS:
            raise BackendError(f"{CHOOSE}={chosen!r} names no CUDA binding: expected one of {', '.join(BINDINGS)}")
        if not _installed(BINDINGS[chosen][0]):
            raise MissingDependencyError(f"{CHOOSE}={chosen} but {BINDINGS[chosen][0]} is not installed: {INSTALL}")
        return chosen
    for name, (module, _) in BINDINGS.items():
        if _installed(module):
            return name
    raise MissingDependencyError(f"no CUDA binding is installed: {INSTALL}")


def binding() -> ModuleType:
    """The tunesvc module of the binding in use (``list_devices()`` and ``CUDADevice``)."""
    return importlib.import_module(BINDINGS[binding_name()][1])


def version_text(v: int) -> str:
    """CUDA's integer version (12040) as text (12.4)."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def kernel_module_version(path: Path = _NVIDIA_VERSION_FILE) -> str:
    """The NVIDIA kernel driver's version (e.g. 550.54.15), the same string NVIDIA's OpenCL
    driver reports, so both backends' fingerprints name one driver alike; '' if unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    for word in text.split():
        parts = word.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            return word
    return ""


def grid_of(global_size: Sequence[int], local_size: Sequence[int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) in CUDA's terms for an OpenCL-style launch, padded to three dimensions.
    As in OpenCL 1.2, the global size must be a multiple of the local size in every dimension."""
    if len(global_size) != len(local_size) or not 1 <= len(global_size) <= 3:
        raise LaunchError(f"launch has global size {tuple(global_size)} and local size {tuple(local_size)}: need 1 to 3 matching dimensions")
    g = tuple(int(x) for x in global_size) + (1,) * (3 - len(global_size))
    b = tuple(int(x) for x in local_size) + (1,) * (3 - len(local_size))
    if any(x < 1 for x in g + b) or any(gi % bi for gi, bi in zip(g, b)):
        raise LaunchError(f"global size {tuple(global_size)} is not a positive multiple of local size {tuple(local_size)}")
    return (g[0] // b[0], g[1] // b[1], g[2] // b[2]), (b[0], b[1], b[2])


def gpu_info(index: int, name: str, capability: tuple[int, int], api: str, version: str,
             attribute: Callable[[str], int], total_memory: int) -> DeviceInfo:
    """A CUDA device's DeviceInfo, the same whichever binding asked: ``attribute`` answers the
    driver's device attributes by their CUDA names (MULTIPROCESSOR_COUNT, ...). One fingerprint
    for both bindings, so results tuned through one are found through the other."""
    major, minor = capability
    fp = Fingerprint(backend="cuda", vendor="NVIDIA", device_type="gpu", architecture=f"sm_{major}{minor}",
                     name=" ".join(name.split()), driver=kernel_module_version() or f"CUDA {api}")
    return DeviceInfo(
        id=f"cuda:{index}",
        fingerprint=fp,
        platform="CUDA",
        version=version,
        c_version=f"compute capability {major}.{minor}",
        compute_units=attribute("MULTIPROCESSOR_COUNT"),
        max_work_group_size=attribute("MAX_THREADS_PER_BLOCK"),
        max_work_item_sizes=tuple(attribute(f"MAX_BLOCK_DIM_{d}") for d in "XYZ"),
        # Templates declare shared memory statically: 48 KiB per block is the static limit, which
        # is what this attribute reports (more needs dynamic shared memory and an opt-in).
        local_mem_size=attribute("MAX_SHARED_MEMORY_PER_BLOCK"),
        local_mem_type="local",
        preferred_vector_width_float=1,
        fp16=(major, minor) >= (5, 3),
        fp64=True,
        global_mem_size=total_memory,
        max_alloc_size=total_memory,
    )


@lru_cache(maxsize=1)
def _devices() -> tuple[DeviceInfo, ...]:
    found = tuple(binding().list_devices())
    if not found:
        raise BackendError("the CUDA driver is loaded but sees no GPU")
    return found


def list_devices() -> list[DeviceInfo]:
    return list(_devices())


def forget() -> None:
    """List the GPUs again on the next call (``discover(refresh=True)``)."""
    _devices.cache_clear()


def open_device(info: DeviceInfo) -> Device:
    """The opened device, through the binding that listed it."""
    device: Device = binding().CUDADevice(info)
    return device
