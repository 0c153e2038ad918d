"""Read recorded tuning spaces: Kernel Tuner cache files and T4 result files.

Kernel Tuner writes a *cache file* (``.json``, often gzipped) while it tunes:
the parameter names and values, then one entry per config it ran, keyed by the
comma-joined values, with the mean kernel time in milliseconds or a failure
string (``CompilationFailedConfig``, ``RuntimeFailedConfig``, ...) and the
milliseconds spent compiling and benchmarking. A *T4 file* (the
auto-tuning community's results schema) holds the same outcomes as a list of
``results`` with an ``invalidity`` class and a ``times`` block.

:func:`load` turns either into one typed :class:`RecordedSpace`, in seconds.
It is used by the replay backend and by importers of recorded results.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImportFileError
from ..search.space import Dimension
from ..types import Config

#: Kernel Tuner's failure strings -> tunesvc failure statuses
KT_FAILURES = {
    "CompilationFailedConfig": "build",
    "RuntimeFailedConfig": "runtime",
    "InvalidConfig": "constraint",
}
#: T4 ``invalidity`` -> tunesvc status
T4_STATUS = {"correct": "ok", "compile": "build", "runtime": "runtime", "constraints": "constraint", "correctness": "wrong_result"}

MS = 1e-3  # both formats record milliseconds


@dataclass(frozen=True)
class RecordedConfig:
    """One config of a recorded space and what happened when it ran."""

    config: Config
    status: str  # "ok" or a failure status from tunesvc.types.STATUSES
    time: float | None  # the recorded objective (Kernel Tuner: the mean kernel time), seconds
    samples: tuple[float, ...]  # every recorded kernel time, seconds (may be empty)
    compile_seconds: float
    benchmark_seconds: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class RecordedSpace:
    """A tuning space recorded on one device for one kernel and problem size."""

    path: str
    format: str  # "kerneltuner" or "t4"
    device_name: str
    kernel_name: str
    problem_size: tuple[int, ...]
    dims: tuple[Dimension, ...]
    configs: tuple[RecordedConfig, ...]

    @property
    def name(self) -> str:
        return Path(self.path).name

    @cached_property
    def valid(self) -> tuple[RecordedConfig, ...]:
        return tuple(c for c in self.configs if c.ok)

    @cached_property
    def failures(self) -> tuple[RecordedConfig, ...]:
        return tuple(c for c in self.configs if not c.ok)

    @cached_property
    def times(self) -> np.ndarray:
        """Recorded times of the valid configs, sorted ascending (seconds)."""
        return np.sort(np.array([c.time for c in self.valid], dtype=np.float64))

    @property
    def optimum(self) -> float:
        return float(self.times[0])

    @cached_property
    def by_config(self) -> dict[Config, RecordedConfig]:
        return {c.config: c for c in self.configs}

    @cached_property
    def space_hash(self) -> str:
        """Identifies the kernel and its parameter space: files of one kernel on two devices share it."""
        h = hashlib.sha256(self.kernel_name.encode())
        h.update(repr([(d.name, d.values) for d in self.dims]).encode())
        return h.hexdigest()[:16]


def load(path: str | Path) -> RecordedSpace:
    """Parse a Kernel Tuner cache file or a T4 results file (``.json`` or ``.json.gz``)."""
    path = Path(path)
    data = _read_json(path)
    if isinstance(data, dict) and "cache" in data and "tune_params" in data:
        return _from_kerneltuner(path, data)
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return _from_t4(path, data)
    raise ImportFileError(f"{path}: neither a Kernel Tuner cache file (no 'cache'/'tune_params') nor a T4 file (no 'results' list)")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file; give a Kernel Tuner cache file or a T4 results file (.json or .json.gz)")
    try:
        with path.open("rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8").rstrip()
        # Kernel Tuner leaves a cache file of an interrupted run without its closing braces.
        if text.endswith(","):
            text = text[:-1] + "}}"
        return json.loads(text)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise ImportFileError(f"{path}: not readable JSON ({str(e).splitlines()[0]}); is it a complete .json or .json.gz file?") from None


def _problem_size(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        return ()


def _from_kerneltuner(path: Path, data: dict) -> RecordedSpace:
    params = data["tune_params"]
    names = list(data.get("tune_params_keys") or params)
    if not isinstance(params, dict) or any(n not in params for n in names):
        raise ImportFileError(f"{path}: 'tune_params' does not list the values of every parameter in 'tune_params_keys'")
    dims = tuple(Dimension(n, tuple(params[n])) for n in names)
    configs = []
    for key, entry in data["cache"].items():
        try:
            configs.append(_kt_entry(entry, names))
        except (KeyError, TypeError, ValueError):
            raise ImportFileError(f"{path}: cache entry {key!r} lacks a parameter or a time; the file is damaged") from None
    return RecordedSpace(str(path), "kerneltuner", str(data.get("device_name") or _guess(path)[1]),
                         str(data.get("kernel_name") or _guess(path)[0]), _problem_size(data.get("problem_size")),
                         dims, tuple(configs))


def _kt_entry(entry: dict, names: list[str]) -> RecordedConfig:
    config = Config({n: entry[n] for n in names})
    t = entry["time"]
    compile_s = float(entry.get("compile_time") or 0.0) * MS
    bench_s = float(entry.get("benchmark_time") or 0.0) * MS
    if isinstance(t, str):
        status = KT_FAILURES.get(t, "runtime")
        return RecordedConfig(config, status, None, (), compile_s, bench_s, reason=t)
    samples = tuple(float(x) * MS for x in entry.get("times") or ())
    return RecordedConfig(config, "ok", float(t) * MS, samples, compile_s, bench_s)


def _from_t4(path: Path, data: dict) -> RecordedSpace:
    results = data["results"]
    if not results:
        raise ImportFileError(f"{path}: T4 file has no results")
    scale = MS if str(data.get("metadata", {}).get("timeunit", "milliseconds")).startswith("mil") else 1.0
    configs = []
    for i, r in enumerate(results):
        try:
            configs.append(_t4_entry(r, scale))
        except (KeyError, TypeError, ValueError, IndexError):
            raise ImportFileError(f"{path}: result {i} lacks 'configuration', 'invalidity' or a time measurement; the file is damaged") from None
    names = list(results[0]["configuration"])
    dims = tuple(Dimension(n, _ordered({c.config[n] for c in configs})) for n in names)
    kernel, device = _guess(path)
    return RecordedSpace(str(path), "t4", device, kernel, (), dims, tuple(configs))


def _t4_entry(r: dict, scale: float) -> RecordedConfig:
    config = Config(r["configuration"])
    status = T4_STATUS.get(r["invalidity"], "runtime")
    times = r.get("times") or {}
    samples = tuple(float(x) * scale for x in times.get("runtimes") or ())
    compile_s = float(times.get("compilation") or 0.0) * scale
    bench_s = float(times["benchmark"]) * scale if "benchmark" in times else sum(samples)
    if status != "ok":
        return RecordedConfig(config, status, None, (), compile_s, bench_s, reason=str(r["invalidity"]))
    value = next(m["value"] for m in r["measurements"] if m["name"] == r.get("objectives", ["time"])[0])
    return RecordedConfig(config, "ok", float(value) * scale, samples, compile_s, bench_s)


def _ordered(values: set) -> tuple:
    """Values in their natural order where they compare, else by their text."""
    try:
        return tuple(sorted(values))
    except TypeError:
        return tuple(sorted(values, key=repr))


def _guess(path: Path) -> tuple[str, str]:
    """(kernel, device) from a name like ``convolution_A100_T4.json.gz``, for files that do not say."""
    stem = path.name.split(".")[0]
    parts = [p for p in stem.split("_") if p.upper() != "T4"]
    return (parts[0], "_".join(parts[1:]) or "unknown") if parts else ("unknown", "unknown")
