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
import math
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ImportFileError
from ..search.space import Dimension
from ..types import STATUSES, Config
from .stream import JSONStreamError, NotAnObject, members

#: Kernel Tuner's failure strings -> tunesvc failure statuses
KT_FAILURES = {
    "CompilationFailedConfig": "build",
    "RuntimeFailedConfig": "runtime",
    "InvalidConfig": "constraint",
}
#: T4 ``invalidity`` -> tunesvc status
T4_STATUS = {"correct": "ok", "compile": "build", "runtime": "runtime", "constraints": "constraint", "correctness": "wrong_result"}

MS = 1e-3  # both formats record milliseconds
#: failure statuses a file written by tunesvc may name beside Kernel Tuner's string
FAILURES = tuple(s for s in STATUSES if s != "ok")


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
    #: (min, max, iqr in seconds, runs) where the file gives them instead of samples (tunesvc's Kernel Tuner export)
    summary: tuple[float, float, float, int] | None = None

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


#: configs a recorded space may hold: replay keeps them all in memory (about 2.5 KB each)
MAX_CONFIGS = 100_000
#: parameters of one config, and samples of one entry: far beyond any recorded space
MAX_PARAMS, MAX_SAMPLES = 256, 100_000
_STREAMED = frozenset(("cache", "results"))
_HEADER = ("device_name", "kernel_name", "problem_size", "tune_params", "tune_params_keys", "metadata")
_SCALARS = (str, int, float, bool)


class Damaged(ValueError):
    """One entry of a recorded file cannot be used; the message says why."""


@dataclass(frozen=True)
class RecordedHeader:
    """What a recorded file says besides its configs (read by a first pass over the file)."""

    path: str
    format: str  # "kerneltuner" or "t4"
    device_name: str
    kernel_name: str
    problem_size: tuple[int, ...]
    names: tuple[str, ...]  # Kernel Tuner: the parameters, in order; T4: () (each result names its own)
    tune_params: dict | None  # Kernel Tuner: parameter -> its values
    scale: float  # seconds per recorded time unit
    entries: int

    @property
    def name(self) -> str:
        return Path(self.path).name


def load(path: str | Path) -> RecordedSpace:
    """Parse a Kernel Tuner cache file or a T4 results file (``.json`` or ``.json.gz``), streamed: memory
    grows with the configs kept, never with the file. Raises ImportFileError with one line."""
    header = read_header(path)
    if header.entries > MAX_CONFIGS:
        raise ImportFileError(f"{path}: {header.entries} recorded configs; replay reads at most {MAX_CONFIGS}")
    configs = []
    for where, entry in entries(header):
        if isinstance(entry, Damaged):
            raise ImportFileError(f"{path}: {where} {entry}; the file is damaged")
        configs.append(entry)
    return RecordedSpace(header.path, header.format, header.device_name, header.kernel_name, header.problem_size,
                         _dims(header, configs), tuple(configs))


def _dims(header: RecordedHeader, configs: list[RecordedConfig]) -> tuple[Dimension, ...]:
    """The parameters and their values: Kernel Tuner's tune_params (every config's values among them),
    or for T4 the values the configs take, in the order of the first config's parameters."""
    if header.tune_params is None:
        names = list(configs[0].config) if configs else []
        if any(len(c.config) != len(names) or any(n not in c.config for n in names) for c in configs):
            raise ImportFileError(f"{header.path}: its results do not all name the same parameters; the file is damaged")
        return tuple(Dimension(n, _ordered({c.config[n] for c in configs})) for n in names)
    values = {n: set(header.tune_params[n]) for n in header.names}
    for c in configs:
        for n in header.names:
            if c.config[n] not in values[n]:
                raise ImportFileError(f"{header.path}: a config has {n}={c.config[n]!r}, which 'tune_params' does not "
                                      "list; the file is damaged")
    return tuple(Dimension(n, tuple(header.tune_params[n])) for n in header.names)


def read_header(path: str | Path) -> RecordedHeader:
    """The header of a Kernel Tuner or T4 file, from a first pass over it that also checks it is one
    whole JSON object and counts its configs. Raises ImportFileError with one line."""
    path = Path(path)
    seen, entries, kind = {}, 0, None
    for key, name, value in _members(path, with_entries=False):
        if name is None:
            seen[key] = value
        else:
            entries += 1
            kind = kind or (key, type(name))
    if "tune_params" in seen and ("cache" in seen or kind and kind[0] == "cache"):
        return _kerneltuner_header(path, seen, entries, kind)
    if kind and kind[0] == "results" or isinstance(seen.get("results"), list):
        if not entries:
            raise ImportFileError(f"{path}: T4 file has no results")
        return _t4_header(path, seen, entries)
    raise ImportFileError(f"{path}: neither a Kernel Tuner cache file (no 'cache'/'tune_params') nor a T4 file (no 'results' list)")


def _members(path: Path, with_entries: bool):
    """(key, entry name or None, value) of a recorded file; the entries' values only ``with_entries``."""
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file; give a Kernel Tuner cache file or a T4 results file (.json or .json.gz)")
    hint = "is it a complete .json or .json.gz file?"
    try:
        with path.open("rb") as f:
            gz = f.read(2) == b"\x1f\x8b"  # gzip magic, whatever the suffix says
        with (gzip.open(path, "rb") if gz else path.open("rb")) as f:
            for key, name, value in members(f, _STREAMED):
                if name is None and key not in _HEADER and key not in _STREAMED:
                    continue  # a member nobody reads (Kernel Tuner's 'objective', T4's 'schema_version')
                yield key, name, value if with_entries or name is None else None
    except NotAnObject:
        raise ImportFileError(f"{path}: neither a Kernel Tuner cache file nor a T4 file (its JSON is not an object)") from None
    except JSONStreamError as e:
        raise ImportFileError(f"{path}: not readable JSON ({e}); {hint}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise ImportFileError(f"{path}: not readable JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__}); {hint}") from None


def _kerneltuner_header(path: Path, seen: dict, entries: int, kind) -> RecordedHeader:
    if kind and kind[1] is not str or "cache" in seen and not isinstance(seen["cache"], dict):
        raise ImportFileError(f"{path}: 'cache' must be an object of entries keyed by their parameter values")
    params = seen["tune_params"]
    names = seen.get("tune_params_keys") or (list(params) if isinstance(params, dict) else [])
    if (not isinstance(params, dict) or not isinstance(names, list) or not names or len(names) > MAX_PARAMS
            or any(type(n) is not str or not isinstance(params.get(n), list) or not params[n] for n in names)
            or any(type(v) not in _SCALARS for n in names for v in params[n])):
        raise ImportFileError(f"{path}: 'tune_params' does not list the values of every parameter in 'tune_params_keys'")
    kernel, device = _guess(path)
    return RecordedHeader(str(path), "kerneltuner", _text(path, seen, "device_name") or device,
                          _text(path, seen, "kernel_name") or kernel, _problem_size(seen.get("problem_size")),
                          tuple(names), {n: params[n] for n in names}, MS, entries)


def _t4_header(path: Path, seen: dict, entries: int) -> RecordedHeader:
    meta = seen.get("metadata")
    unit = meta.get("timeunit", "milliseconds") if isinstance(meta, dict) else "milliseconds"
    kernel, device = _guess(path)
    return RecordedHeader(str(path), "t4", device, kernel, (), (), None,
                          MS if str(unit).startswith("mil") else 1.0, entries)


def _text(path: Path, seen: dict, key: str) -> str:
    value = seen.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ImportFileError(f"{path}: {key!r} must be a string, not {type(value).__name__}")
    return value


def entries(header: RecordedHeader) -> Iterator[tuple[str, RecordedConfig | Damaged]]:
    """(where, config or why it is damaged) for each entry of a recorded file, streamed (a second pass)."""
    parse = _kt_entry if header.format == "kerneltuner" else _t4_entry
    for key, name, value in _members(Path(header.path), with_entries=True):
        if name is None or key not in _STREAMED:
            continue
        where = f"cache entry {name[:60]!r}" if isinstance(name, str) else f"result {name}"
        try:
            yield where, parse(value, header)
        except Damaged as e:
            yield where, e


def _problem_size(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if len(values) > 8 or not all(type(v) is int or type(v) is float and v.is_integer() for v in values):
        return ()
    return tuple(int(v) for v in values)


def _seconds(value: Any, what: str, scale: float) -> float:
    """A recorded duration in seconds: a finite number >= 0 in the file's unit."""
    if type(value) not in (int, float):
        raise Damaged(f"has a {what} that is not a number ({type(value).__name__})")
    try:
        seconds = float(value) * scale
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise Damaged(f"has a {what} that is not a finite number >= 0")
    return seconds


def _config(values: Any, names) -> Config:
    if not isinstance(values, dict):
        raise Damaged("is not an object of parameter values")
    if len(names) > MAX_PARAMS:
        raise Damaged(f"has more than {MAX_PARAMS} parameters")
    missing = [n for n in names if n not in values]
    if missing:
        raise Damaged(f"lacks the parameter {missing[0][:40]!r}")
    bad = next((n for n in names if type(values[n]) not in _SCALARS), None)
    if bad is not None:
        raise Damaged(f"has a {type(values[bad]).__name__} as the value of {bad[:40]!r}")
    return Config({n: values[n] for n in names})


def _samples(values: Any, scale: float) -> tuple[float, ...]:
    if values is None:
        return ()
    if not isinstance(values, list) or len(values) > MAX_SAMPLES:
        raise Damaged(f"has times that are not a list of at most {MAX_SAMPLES} numbers")
    return tuple(_seconds(x, "time sample", scale) for x in values)


def _kt_entry(entry: Any, header: RecordedHeader) -> RecordedConfig:
    config = _config(entry, header.names)
    if "time" not in entry:
        raise Damaged("lacks a time")
    t = entry["time"]
    compile_s = _seconds(entry.get("compile_time") or 0.0, "compile_time", MS)
    bench_s = _seconds(entry.get("benchmark_time") or 0.0, "benchmark_time", MS)
    if isinstance(t, str):
        status = KT_FAILURES.get(t, "runtime")
        if entry.get("tunesvc_status") in FAILURES:  # written by tunesvc: its own status, which Kernel Tuner has not
            status = entry["tunesvc_status"]
        reason = entry.get("tunesvc_reason")
        return RecordedConfig(config, status, None, (), compile_s, bench_s, reason=(reason if isinstance(reason, str) else t)[:4096])
    time_s = _positive(_seconds(t, "time", header.scale))
    note = entry.get("tunesvc_reason")  # tunesvc's note on an ok config (an abandoned one's)
    return RecordedConfig(config, "ok", time_s, _samples(entry.get("times"), header.scale), compile_s, bench_s,
                          reason=note[:4096] if isinstance(note, str) else "", summary=_summary(entry, header.scale))


def _summary(entry: dict, scale: float) -> tuple[float, float, float, int] | None:
    """tunesvc's statistics of an entry it wrote (no samples: it keeps none), None in Kernel Tuner's own files."""
    if "time_iqr" not in entry:
        return None
    runs = entry.get("runs")
    if type(runs) is not int or not 1 <= runs <= 10**9:
        raise Damaged("has a 'time_iqr' but no whole number of 'runs'")
    return (_seconds(entry.get("time_min"), "time_min", scale), _seconds(entry.get("time_max"), "time_max", scale),
            _seconds(entry["time_iqr"], "time_iqr", scale), runs)


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise Damaged("has a time of 0: a kernel that ran takes some time")
    return seconds


def _t4_entry(r: Any, header: RecordedHeader) -> RecordedConfig:
    if not isinstance(r, dict) or "configuration" not in r or "invalidity" not in r:
        raise Damaged("lacks 'configuration' or 'invalidity'")
    values = r["configuration"]
    config = _config(values, list(values) if isinstance(values, dict) else [])
    invalidity = r["invalidity"]
    status = T4_STATUS.get(invalidity, "runtime") if isinstance(invalidity, str) else "runtime"
    times = r.get("times") or {}
    if not isinstance(times, dict):
        raise Damaged("has 'times' that is not an object")
    scale = header.scale
    samples = _samples(times.get("runtimes"), scale)
    compile_s = _seconds(times.get("compilation") or 0.0, "compilation time", scale)
    bench_s = _seconds(times["benchmark"], "benchmark time", scale) if "benchmark" in times else sum(samples)
    if status != "ok":
        return RecordedConfig(config, status, None, (), compile_s, bench_s, reason=str(invalidity)[:4096])
    return RecordedConfig(config, "ok", _positive(_seconds(_objective(r), "time", scale)), samples, compile_s, bench_s)


def _objective(r: dict):
    """The value of the result's first objective among its measurements."""
    objectives = r.get("objectives") or ["time"]
    measurements = r.get("measurements")
    if not isinstance(objectives, list) or not isinstance(measurements, list):
        raise Damaged("has 'objectives' or 'measurements' that are not lists")
    wanted = objectives[0]
    for m in measurements:
        if isinstance(m, dict) and m.get("name") == wanted and "value" in m:
            return m["value"]
    raise Damaged(f"has no measurement of its objective {str(wanted)[:40]!r}")


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
