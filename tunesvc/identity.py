"""Device identity: which hardware a driver shows, which driver shows it, and how two devices
are related. Driver-free: the one owner of these rules, for lookup, transfer, import and replay.

A device's fingerprint keeps the hardware (vendor, type, architecture, name)
apart from the driver (platform and version): Intel's CPU OpenCL runtime
reports vendor "Intel(R) Corporation" for an AMD EPYC, and PoCL calls the same
chip "pthread-haswell-AMD EPYC". Both must name the hardware the same way, so
that :func:`relation` calls them ``family``, while the driver keeps one driver's
records from answering as ``exact`` for another.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from .types import Fingerprint

#: what :func:`relation` answers, closest first
RELATIONS = ("exact", "family", "vendor", "other")
#: the vendor of a device that names none
UNKNOWN = "unknown"

_VENDOR_NAMES = (
    ("nvidia", "NVIDIA"),
    ("advanced micro devices", "AMD"),
    ("authenticamd", "AMD"),
    ("amd", "AMD"),
    ("intel", "Intel"),
    ("genuineintel", "Intel"),
    ("apple", "Apple"),
    ("arm", "ARM"),
    ("qualcomm", "Qualcomm"),
)

#: the normalised vendor names, each its own normalisation
VENDORS = tuple(dict.fromkeys(name for _, name in _VENDOR_NAMES))

#: short names of OpenCL platforms, for the driver half of a fingerprint
_PLATFORMS = (
    ("portable computing language", "PoCL"),
    ("pocl", "PoCL"),
    ("intel(r) opencl", "Intel OpenCL"),
    ("intel", "Intel OpenCL"),
    ("nvidia", "NVIDIA CUDA"),
    ("amd accelerated parallel processing", "AMD APP"),
    ("rusticl", "rusticl"),
    ("clover", "Clover"),
)


@functools.lru_cache(maxsize=1024)  # a cold lookup relates every stored device of a type: few distinct vendors
def normalise_vendor(vendor: str) -> str:
    """'Advanced Micro Devices, Inc.', 'AuthenticAMD' -> 'AMD'; unknown vendors as given ('unknown' if empty)."""
    v = vendor.strip().lower()
    for needle, name in _VENDOR_NAMES:
        if needle in v:
            return name
    return vendor.strip() or UNKNOWN


# A recorded file (Kernel Tuner, T4) names only its device: the vendor is guessed from the name.
_NAME_VENDORS = (("nvidia", "NVIDIA"), ("geforce", "NVIDIA"), ("tesla", "NVIDIA"), ("quadro", "NVIDIA"),
                 ("rtx", "NVIDIA"), ("a100", "NVIDIA"), ("h100", "NVIDIA"), ("amd", "AMD"), ("radeon", "AMD"),
                 ("mi250", "AMD"), ("mi300", "AMD"), ("intel", "Intel"))  # fmt: skip


def guess_vendor(device_name: str) -> str:
    """The normalised vendor a device name suggests ('NVIDIA GeForce RTX 3090' -> 'NVIDIA'), 'unknown'
    when it suggests none: one answer for a recorded file, whether it is replayed or imported."""
    low = device_name.lower()
    return next((vendor for needle, vendor in _NAME_VENDORS if needle in low), UNKNOWN)


# Kernel Tuner names a device as its backend does: an OpenCL CPU as 'pthread-skylake-avx512-AMD EPYC'
# (PoCL 3.1), 'pthread-AMD EPYC' (3.0) or 'AMD EPYC 7B13 64-Core Processor' (Intel's runtime)
_CPU_WORDS = re.compile(r"^(?:pthread|cpu|basic)-|\b(?:cpu|epyc|xeon|ryzen|threadripper|opteron|athlon|"
                        r"core\(tm\)|core i\d|pentium|celeron|neoverse|graviton|ampere altra|processor)\b", re.IGNORECASE)
_CHIP_VENDOR = re.compile(r"\b(?:AMD|Intel|ARM|Apple|Ampere|Qualcomm)\b")


def guess_device_type(device_name: str) -> str:
    """'cpu' where a recorded device's name is a CPU's (a chip's name, or PoCL's decoration of it),
    else 'gpu': recorded files name only their device."""
    return "cpu" if _CPU_WORDS.search(device_name) else "gpu"


def recorded_cpu_name(device_name: str) -> str:
    """The chip's name in a recorded CPU device's name: PoCL's 'pthread-<llvm cpu>-' prefix dropped,
    so that it names the chip as this machine's fingerprint does ('AMD EPYC')."""
    name = cpu_hardware_name(device_name)
    vendor = _CHIP_VENDOR.search(name)
    return name[vendor.start():] if vendor and "-" in name[:vendor.start()] else name


# ---- names and relations -----------------------------------------------------------------
_MARKS = re.compile(r"\((?:r|tm|c)\)|[®™]|\b\d+[- ]core\b")
_SEPARATORS = re.compile(r"[-_/,@]+")
_NOISE = re.compile(
    r"^(?:nvidia|amd|ati|intel|apple|arm|qualcomm|advanced|micro|devices|corporation|corp|inc|pthread|cpu|gpu|"
    r"pcie|sxm\d*|nvl|oem|\d+gb|hbm\d*e?|processor|graphics|device|\d+-core|\d+core|[\d.]+[gm]hz)$"
)


@functools.lru_cache(maxsize=4096)
def normalise_name(name: str) -> str:
    """A device name without vendor prefixes, board suffixes, marks and spacing:
    'NVIDIA A100-SXM4-80GB' and 'A100 PCIe 40GB' both become 'a100'."""
    text = _SEPARATORS.sub(" ", _MARKS.sub(" ", name.lower()))
    words = [w for w in text.split() if not _NOISE.match(w)]
    return " ".join(words) or name.strip().lower()


def relation(a: Fingerprint, b: Fingerprint) -> str:
    """How closely device ``b`` is related to device ``a`` (symmetric), one of :data:`RELATIONS`:

    * ``exact``: the same fingerprint key (hardware and driver);
    * ``family``: the same hardware under another driver or backend: the same normalised vendor and
      device type, and the same normalised name or the same (known) architecture;
    * ``vendor``: another device of the same (known) vendor and device type;
    * ``other``: anything else (an AMD CPU and an AMD GPU are ``other``: one's results say nothing of
      the other's).
    """
    # the cheap tests first: a cold lookup relates every stored device of the asker's type and vendor
    if a.device_type != b.device_type or (a.vendor != b.vendor and normalise_vendor(a.vendor) != normalise_vendor(b.vendor)):
        return "other"
    if a.key == b.key:
        return "exact"
    if (a.architecture and a.architecture == b.architecture) or normalise_name(a.name) == normalise_name(b.name):
        return "family"
    # two devices that name no vendor share nothing known
    return "vendor" if normalise_vendor(a.vendor) != UNKNOWN else "other"


def platform_label(platform: str) -> str:
    """A short, stable name of an OpenCL platform: 'Portable Computing Language' -> 'PoCL'."""
    p = platform.strip().lower()
    for needle, name in _PLATFORMS:
        if needle in p:
            return name
    return " ".join(platform.split()) or "unknown"


def driver_label(platform: str, driver_version: str) -> str:
    """The driver half of a fingerprint: platform and version ('PoCL 3.1+debian')."""
    return f"{platform_label(platform)} {driver_version.strip()}".strip()


# ---- CPUs --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def host_cpu() -> dict:
    """Facts of this machine's CPU from /proc/cpuinfo: vendor, model name, family, model,
    flags, MHz, logical CPUs ({} where the file is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    return parse_cpuinfo(text)


def parse_cpuinfo(text: str) -> dict:
    first: dict = {}
    cpus = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            cpus += 1
        first.setdefault(key, value.strip())
    return {
        "vendor": normalise_vendor(first.get("vendor_id", "")),
        "model_name": " ".join(first.get("model name", "").split()),
        "family": first.get("cpu family", ""),
        "model": first.get("model", ""),
        "flags": frozenset(first.get("flags", "").split()),
        "mhz": float(first.get("cpu MHz", "0") or 0),
        "cpus": cpus,
    }


def cpu_architecture(cpu: dict) -> str:
    """The hardware architecture of a CPU as its vendor numbers it ('x86 family 25 model 1'),
    not the compiler target a driver picked (PoCL 3.1 targets 'haswell' on a Zen 3)."""
    if not cpu.get("family"):
        return ""
    return f"x86 family {cpu['family']} model {cpu['model']}"


# PoCL names a CPU device 'pthread-<llvm cpu>-<model name>' (3.1) or 'pthread-<model name>' (3.0)
_POCL_PREFIX = re.compile(r"^(?:pthread|cpu|basic|cpu-minimal|cpu-tbb)-", re.IGNORECASE)


def cpu_hardware_name(device_name: str, model_name: str = "") -> str:
    """The chip's own name of a CPU device, without the driver's decoration."""
    name = " ".join(device_name.split())
    if model_name and name.endswith(model_name):
        return model_name
    stripped = _POCL_PREFIX.sub("", name)
    return stripped or name


def cpu_vendor(device_name: str, reported_vendor: str, cpu: dict) -> str:
    """The hardware vendor of a CPU device: the chip's, whatever the driver's vendor is."""
    for guess in (device_name, cpu.get("vendor", "")):
        v = normalise_vendor(guess)
        if v in ("AMD", "Intel", "ARM", "Apple", "Qualcomm"):
            return v
    return normalise_vendor(reported_vendor)
