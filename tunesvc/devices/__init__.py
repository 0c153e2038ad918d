"""Device discovery and selection across backends.

Backends are imported lazily: listing CUDA devices must not break where pycuda
is absent, and ``import tunesvc`` must not touch any driver.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import DeviceNotFoundError, MissingDependencyError, TunesvcError
from ..types import DeviceInfo
from .base import Device, Program  # noqa: F401

#: backend name -> module with ``list_devices()`` and a Device subclass named in DEVICE_CLASSES
BACKENDS = {"opencl": "tunesvc.devices.opencl", "cuda": "tunesvc.devices.cuda"}
DEVICE_CLASSES = {"opencl": "OpenCLDevice", "cuda": "CUDADevice"}


@dataclass(frozen=True)
class Discovery:
    """Every device found, and for each backend that found none, why."""

    devices: tuple[DeviceInfo, ...]
    unavailable: dict  # backend -> one-line reason


_discovery: Discovery | None = None
_open: dict[str, Device] = {}


def discover(refresh: bool = False) -> Discovery:
    global _discovery
    if _discovery is not None and not refresh:
        return _discovery
    devices, unavailable = [], {}
    for backend, module in BACKENDS.items():
        try:
            found = importlib.import_module(module).list_devices()
        except (ImportError, MissingDependencyError, TunesvcError) as e:
            unavailable[backend] = str(e).splitlines()[0] if str(e) else type(e).__name__
            continue
        if not found:
            unavailable.setdefault(backend, f"no {backend} device found")
        devices.extend(found)
    _discovery = Discovery(tuple(devices), unavailable)
    return _discovery


def list_devices() -> list[DeviceInfo]:
    return list(discover().devices)


def default_device(devices: list[DeviceInfo]) -> DeviceInfo:
    """The first GPU, else the first CPU, else the first device of any type."""
    for kind in ("gpu", "cpu"):
        for d in devices:
            if d.device_type == kind:
                return d
    if devices:
        return devices[0]
    raise DeviceNotFoundError(
        "no OpenCL or CUDA device found; install a driver, e.g. pip install 'tunesvc[pocl]' for the CPU OpenCL device"
    )


def match_device(spec: str | None, devices: list[DeviceInfo]) -> DeviceInfo:
    """Resolve an id (``opencl:0:0``), a fingerprint key, or a name substring."""
    if spec is None or spec == "" or spec == "default":
        return default_device(devices)
    for d in devices:
        if spec == d.id or spec == d.fingerprint.key:
            return d
    needle = spec.lower()
    hits = [d for d in devices if needle in d.name.lower() or needle in d.platform.lower()]
    if len(hits) >= 1:
        return hits[0]
    known = ", ".join(f"{d.id} ({d.name})" for d in devices) or "none"
    raise DeviceNotFoundError(f"no device matches {spec!r}; known devices: {known}. Run 'tunesvc devices' to list them")


def select_device(spec: str | DeviceInfo | None = None) -> DeviceInfo:
    if isinstance(spec, DeviceInfo):
        return spec
    found = discover()
    try:
        return match_device(spec, list(found.devices))
    except DeviceNotFoundError as e:
        # "cuda:0" where pycuda is missing: say why the backend has no devices, not only that none matched.
        backend = str(spec or "").split(":")[0]
        if backend in found.unavailable:
            raise DeviceNotFoundError(f"{e}; {backend}: {found.unavailable[backend]}") from None
        raise


def open_device(spec: str | DeviceInfo | Device | None = None) -> Device:
    """An opened device, one per id per process (contexts are expensive)."""
    if isinstance(spec, Device):
        return spec
    info = select_device(spec)
    dev = _open.get(info.id)
    if dev is None:
        backend = info.fingerprint.backend
        module = importlib.import_module(BACKENDS[backend])
        dev = _open[info.id] = getattr(module, DEVICE_CLASSES[backend])(info)
    return dev
