"""Device discovery and selection across backends.

Backends are imported lazily: listing CUDA devices must not break where no CUDA
binding is installed, and ``import tunesvc`` must not touch any driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import DeviceNotFoundError, DeviceUnusableError
from ..types import DeviceInfo
from .backends import BACKENDS, all_devices as _all_devices, open_info  # noqa: F401
from .base import Device, Program  # noqa: F401



@dataclass(frozen=True)
class Discovery:
    """Every usable device found; the devices that cannot build, each with why and the fix;
    and for each backend that found none, why."""

    devices: tuple[DeviceInfo, ...]  # usable only: each built and ran a trivial kernel
    unavailable: dict  # backend -> one-line reason
    unusable: tuple = ()  # (DeviceInfo, reason and fix) of listed devices that cannot build


_discovery: Discovery | None = None

#: CPU drivers in order of preference for the default device, best measured first (docs/benchmarks.md):
#: Intel's CPU runtime, then PoCL (newer first), then any other
CPU_DRIVER_PREFERENCE = ("Intel OpenCL", "PoCL")


def discover(refresh: bool = False) -> Discovery:
    """The devices of every backend, each checked once per driver (remembered across processes;
    ``refresh`` checks again) for whether it can build and run a trivial kernel."""
    global _discovery
    if _discovery is not None and not refresh:
        return _discovery
    from .drivers import fix_for
    from .usable import check

    devices, unavailable = _all_devices(refresh)
    verdicts = check(list(devices), refresh=refresh)
    usable = tuple(d for d in devices if verdicts[d.id].usable)
    unusable = tuple((d, f"{verdicts[d.id].reason}; {fix_for(d, verdicts[d.id].reason)}")
                     for d in devices if not verdicts[d.id].usable)
    _discovery = Discovery(usable, unavailable, unusable)
    return _discovery


def list_devices() -> list[DeviceInfo]:
    """The usable devices."""
    return list(discover().devices)


def _cpu_rank(d: DeviceInfo) -> tuple:
    driver = d.fingerprint.driver
    for rank, name in enumerate(CPU_DRIVER_PREFERENCE):
        if driver.startswith(name + " "):
            version = tuple(int(x) for x in re.findall(r"\d+", driver[len(name):])[:3])
            return (rank, tuple(-v for v in version), d.id)
    return (len(CPU_DRIVER_PREFERENCE), (), d.id)


def default_device(devices: list[DeviceInfo]) -> DeviceInfo:
    """The first GPU; else the CPU device of the most preferred driver (CPU_DRIVER_PREFERENCE,
    newest version first); else the first device of any type."""
    gpus = [d for d in devices if d.device_type == "gpu"]
    if gpus:
        return gpus[0]
    cpus = sorted((d for d in devices if d.device_type == "cpu"), key=_cpu_rank)
    if cpus:
        return cpus[0]
    if devices:
        return devices[0]
    from .drivers import INSTALL_HINT

    found = discover()
    if found.unusable:
        listed = "; ".join(f"{d.id} ({d.name}, {d.fingerprint.driver}): {why}" for d, why in found.unusable)
        raise DeviceNotFoundError(f"no usable OpenCL or CUDA device: {listed}")
    raise DeviceNotFoundError(f"no OpenCL or CUDA device found; {INSTALL_HINT}")


def match_device(spec: str | None, devices: list[DeviceInfo]) -> DeviceInfo:
    """Resolve an id (``opencl:0:0``), a fingerprint key, or a name substring."""
    if spec is None or spec == "" or spec == "default":
        return default_device(devices)
    for d in devices:
        if spec == d.id or spec == d.fingerprint.key:
            return d
    needle = spec.lower()
    hits = [d for d in devices if needle in d.name.lower() or needle in d.platform.lower()
            or needle in d.fingerprint.driver.lower()]
    if len(hits) >= 1:
        return hits[0]
    known = ", ".join(f"{d.id} ({d.name}, {d.fingerprint.driver})" for d in devices) or "none"
    raise DeviceNotFoundError(f"no device matches {spec!r}; known devices: {known}. Run 'tunesvc devices' to list them")


def select_device(spec: str | DeviceInfo | None = None) -> DeviceInfo:
    if isinstance(spec, DeviceInfo):
        return spec
    found = discover()
    try:
        return match_device(spec, list(found.devices))
    except DeviceNotFoundError as e:
        for d, why in found.unusable:  # named, but it cannot build: say so, not "no such device"
            if spec in (d.id, d.fingerprint.key):
                raise DeviceUnusableError(f"device {d.id} ({d.name}, {d.fingerprint.driver}) cannot build kernels: {why}") from None
        # "cuda:0" where no CUDA binding is installed: say why the backend has no devices, not only that none matched.
        backend = str(spec or "").split(":")[0]
        if backend in found.unavailable:
            raise DeviceNotFoundError(f"{e}; {backend}: {found.unavailable[backend]}") from None
        raise


def open_device(spec: str | DeviceInfo | Device | None = None) -> Device:
    """An opened device, one per id per process (contexts are expensive)."""
    if isinstance(spec, Device):
        return spec
    return open_info(select_device(spec))
