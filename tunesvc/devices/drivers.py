"""The CPU OpenCL drivers tunesvc knows how to install and register, and what to say when one fails.

Intel's CPU runtime from PyPI (``intel-opencl-rt``, the ``intel`` extra) ships an
``.icd`` file naming its build machine's path, so the ICD loader never finds it
on its own. :func:`register_drivers` gives the loader a vendor folder of our own
(a copy of the system's entries plus one naming the installed ``libintelocl.so``
by absolute path) before pyopencl first lists platforms. The library finds its
own dependencies through its ``$ORIGIN`` run path, so nothing else is needed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

from ..settings import ENV_REGISTER, cache_dir

SYSTEM_VENDORS = Path("/etc/OpenCL/vendors")
ICD_ENV = "OCL_ICD_VENDORS"

#: what to install for a usable CPU OpenCL device, best measured first (docs/benchmarks.md)
INSTALL_HINT = ("install a working CPU OpenCL driver: pip install 'tunesvc[intel]' (Intel's CPU runtime, any x86-64 CPU, "
                "no root), or as root apt-get install pocl-opencl-icd (Debian's PoCL)")

_registered: str | None = None


def intel_cpu_library() -> Path | None:
    """The installed ``libintelocl.so`` of the ``intel-opencl-rt`` wheel, or None."""
    try:
        dist = importlib.metadata.distribution("intel-opencl-rt")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == "libintelocl.so":
            path = Path(str(dist.locate_file(f))).resolve()
            if path.is_file():
                return path
    return None


def _existing_entries() -> list[tuple[str, str]]:
    """(file name, content) of every vendor entry the loader would read without us."""
    where = os.environ.get(ICD_ENV)
    sources = [Path(p) for p in where.split(":")] if where else [SYSTEM_VENDORS]
    out = []
    for src in sources:
        files = sorted(src.glob("*.icd")) if src.is_dir() else [src] if src.is_file() else []
        for f in files:
            try:
                out.append((f.name, f.read_text().strip()))
            except OSError:
                continue
    return out


def register_drivers() -> str | None:
    """Point the ICD loader at a vendor folder that includes Intel's CPU runtime, when that
    runtime is installed; return the folder (None: nothing to register, environment untouched).

    Idempotent; ``TUNESVC_REGISTER_DRIVERS=0`` turns it off. It only works before the
    process's first platform query, which is why ``devices.opencl`` calls it before
    importing pyopencl.
    """
    global _registered
    if _registered is not None or os.environ.get(ENV_REGISTER, "1") == "0":
        return _registered
    lib = intel_cpu_library()
    if lib is None:
        return None
    entries = [(n, c) for n, c in _existing_entries() if "libintelocl" not in c]
    entries.append(("tunesvc-intel-cpu.icd", str(lib)))
    digest = hashlib.sha256(repr(entries).encode()).hexdigest()[:16]
    folder = cache_dir() / "opencl-vendors" / digest
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in entries:
            target = folder / name
            if not target.is_file() or target.read_text().strip() != content:
                tmp = folder / f".{name}.{os.getpid()}"
                tmp.write_text(content + "\n")
                tmp.replace(target)  # atomic: a concurrent process reads the old or the new file
    except OSError:  # an unwritable cache: the loader keeps its own list, Intel's runtime stays hidden
        return None
    os.environ[ICD_ENV] = str(folder)
    _registered = str(folder)
    return _registered


def fix_for(info, error: str) -> str:
    """What to do about a device that cannot build a trivial kernel."""
    platform = info.platform.lower()
    if "portable computing language" in platform and info.fingerprint.driver.startswith("PoCL 3.0"):
        return ("pip's PoCL 3.0 (pocl-binary-distribution) cannot compile for this CPU; "
                "pip uninstall pocl-binary-distribution, and " + INSTALL_HINT)
    if "portable computing language" in platform:
        return "this PoCL cannot compile for this CPU; " + INSTALL_HINT
    return f"reinstall or update the {info.platform} driver"
