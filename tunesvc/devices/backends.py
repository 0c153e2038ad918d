"""The backends: which modules list and open devices, imported only when asked.

Listing CUDA devices must not break where no CUDA binding is installed, and ``import tunesvc`` must not
touch any driver; so each backend is a module name here, imported on first use.
"""

from __future__ import annotations

import importlib

from ..errors import MissingDependencyError, TunesvcError
from ..types import DeviceInfo
from .base import Device

#: backend name -> module with ``list_devices()``, ``forget()`` and the opener named in OPENERS
BACKENDS = {"opencl": "tunesvc.devices.opencl", "cuda": "tunesvc.devices.cuda"}
#: backend name -> what opens a listed device (a Device subclass, or a function choosing one)
OPENERS = {"opencl": "OpenCLDevice", "cuda": "open_device"}

_open: dict[str, Device] = {}


def all_devices(refresh: bool = False) -> tuple[tuple[DeviceInfo, ...], dict]:
    """Every device each backend lists, unchecked, and why a backend lists none; with ``refresh``
    the backends list them again instead of answering from what they listed before."""
    devices, unavailable = [], {}
    for backend, module in BACKENDS.items():
        try:
            listing = importlib.import_module(module)
            if refresh:
                listing.forget()
            found = listing.list_devices()
        except (ImportError, MissingDependencyError, TunesvcError) as e:
            unavailable[backend] = str(e).splitlines()[0] if str(e) else type(e).__name__
            continue
        if not found:
            unavailable.setdefault(backend, f"no {backend} device found")
        devices.extend(found)
    return tuple(devices), unavailable


def open_info(info: DeviceInfo) -> Device:
    """The opened device of a listed device, one per id per process (contexts are expensive)."""
    dev = _open.get(info.id)
    if dev is None:
        backend = info.fingerprint.backend
        module = importlib.import_module(BACKENDS[backend])
        dev = _open[info.id] = getattr(module, OPENERS[backend])(info)
    return dev
