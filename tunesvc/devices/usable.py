"""Whether a device can build and run a trivial kernel, checked once per driver and remembered.

A driver can list a device that builds nothing (pip's PoCL 3.0 on CPUs it does
not know: ``unknown target CPU 'generic'``). Each device is checked in a child
process (a driver that crashes or hangs takes only the child down), the
verdicts of all unchecked devices at once, and the verdict is kept in
``<cache dir>/drivers.json`` keyed by the device's fingerprint, its version
string and the driver's build settings from the environment, so that a lookup
never pays for it again.

    python -m tunesvc.devices.usable DEVICE_ID    # the child: prints one JSON line
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np

from ..settings import cache_dir
from ..types import DeviceInfo

#: signals a driver dies of by itself: a crash it will crash again; any other (SIGKILL, SIGTERM,
#: SIGINT: a user, a CI runner or an OOM killer stopping the process) says nothing of the driver
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGSYS})
CHECK_TIMEOUT = 180.0  # seconds; a first PoCL build takes up to a few
_VERDICTS = "drivers.json"
_N = 64

_SOURCES = {
    "opencl": "__kernel void ts_check(__global float* x) { int i = get_global_id(0); x[i] = 2.0f * x[i] + 1.0f; }",
    "cuda": 'extern "C" __global__ void ts_check(float* x) { int i = blockIdx.x * blockDim.x + threadIdx.x; x[i] = 2.0f * x[i] + 1.0f; }',
}


class Verdict(NamedTuple):
    usable: bool
    reason: str = ""  # the first error line, for an unusable device
    remember: bool = True  # False: the check itself did not finish (timeout, a child that failed to start)


class _Launch(NamedTuple):
    kernel: str
    global_size: tuple
    local_size: tuple
    args: tuple


def verdict_key(info: DeviceInfo) -> str:
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(("POCL_", "CL_CONFIG_")))
    settings = hashlib.sha256(repr(env).encode()).hexdigest()[:12]
    return f"{info.fingerprint.key}|{info.version}|{settings}"


def _load() -> dict:
    try:
        return json.loads((cache_dir() / _VERDICTS).read_text())
    except (OSError, ValueError):
        return {}


def _save(verdicts: dict) -> None:
    path = cache_dir() / _VERDICTS
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_load(), **verdicts}  # another process may have added its own meanwhile
        tmp = path.with_name(f".{_VERDICTS}.{os.getpid()}")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:  # an unwritable cache: checked again next time, never wrong
        pass


def check_in_process(device) -> Verdict:
    """Build, run and verify the trivial kernel on an opened device."""
    from ..errors import TunesvcError

    if "PoCL 3.0-rc" in device.info.fingerprint.driver:
        # Where it builds at all (Zen 4; on Zen 3 it knows no target CPU), this release candidate
        # drops a built program's kernels (INVALID_KERNEL_NAME for one gemv_q config) and aborts the
        # process when it releases its compiler with programs alive ("can't release LLVM context"):
        # a long tuning or test process dies with SIGABRT. PoCL 3.1 and Intel's runtime do neither.
        return Verdict(False, "PoCL 3.0-rc2 (pip's pocl-binary-distribution 3.0) drops kernels and aborts long "
                              "processes; install Debian's PoCL (apt-get install pocl-opencl-icd) or "
                              "pip install 'tunesvc[intel]'")
    try:
        program = device.build(_SOURCES[device.dialect], {}, ("ts_check",))
        buf = device.alloc(_N * 4)
        device.write(buf, np.arange(_N, dtype=np.float32))
        device.run(program, (_Launch("ts_check", (_N,), (min(_N, device.info.max_work_group_size),), ("x",)),), {"x": buf})
        out = np.empty(_N, dtype=np.float32)
        device.read(buf, out)
    except (TunesvcError, RuntimeError, OSError) as e:
        return Verdict(False, (str(e).splitlines() or [type(e).__name__])[0][:300])
    if not np.array_equal(out, 2.0 * np.arange(_N, dtype=np.float32) + 1.0):
        return Verdict(False, "a trivial kernel ran but wrote wrong values")
    return Verdict(True)


def check(infos: list[DeviceInfo], refresh: bool = False) -> dict[str, Verdict]:
    """Device id -> Verdict for each of ``infos``: remembered ones as they are, the others
    checked now, each in its own child process, all at once."""
    known = {} if refresh else _load()
    out, todo = {}, []
    for info in infos:
        v = known.get(verdict_key(info))
        if v is not None:
            out[info.id] = Verdict(bool(v["usable"]), v.get("reason", ""))
        else:
            todo.append(info)
    if not todo:
        return out
    children = {info.id: subprocess.Popen([sys.executable, "-m", "tunesvc.devices.usable", info.id],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for info in todo}
    fresh = {}
    for info in todo:
        verdict = _collect(children[info.id])
        out[info.id] = verdict
        if verdict.remember:
            fresh[verdict_key(info)] = {"usable": verdict.usable, "reason": verdict.reason, "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _save(fresh)
    return out


def _collect(child: subprocess.Popen) -> Verdict:
    try:
        stdout, stderr = child.communicate(timeout=CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return Verdict(False, f"building a trivial kernel took more than {CHECK_TIMEOUT:.0f} s", remember=False)
    for line in reversed(stdout.splitlines()):
        try:
            d = json.loads(line)
            return Verdict(bool(d["usable"]), str(d.get("reason", "")))
        except (ValueError, KeyError, TypeError):
            continue
    last = (stderr.strip().splitlines() or [f"exit code {child.returncode}"])[-1]
    # died of a crash signal: the driver crashed, and will again; killed from outside, or any other
    # exit (ours): check again next time
    crashed = child.returncode < 0 and -child.returncode in CRASH_SIGNALS
    if child.returncode < 0 and not crashed:
        return Verdict(False, f"the check was stopped by signal {signal.Signals(-child.returncode).name}", remember=False)
    return Verdict(False, f"the driver crashed while building a trivial kernel: {last[:250]}", remember=crashed)


def _main(device_id: str) -> None:
    from .backends import all_devices, open_info

    info = next((d for d in all_devices()[0] if d.id == device_id), None)
    if info is None:
        verdict = Verdict(False, f"device {device_id} is gone")
    else:
        try:
            verdict = check_in_process(open_info(info))
        except Exception as e:  # noqa: BLE001 - whatever the driver raises is the verdict
            verdict = Verdict(False, (str(e).splitlines() or [type(e).__name__])[0][:300])
    print(json.dumps({"usable": verdict.usable, "reason": verdict.reason}), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1])
