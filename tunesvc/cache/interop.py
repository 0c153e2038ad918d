"""Kernel Tuner cache files and T4 result files as import sources.

:mod:`tunesvc.replay.files` parses them; here each recorded config becomes
an export line and goes through the same validation as a tunesvc export, for
the template registered under the file's kernel name. A file of a kernel with
no such template has every record rejected with that reason.

The other way, :func:`export_kerneltuner` writes one problem's records as a
Kernel Tuner 1.5 cache file, which Kernel Tuner's simulation mode replays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import zlib
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .. import templates
from .._version import __version__
from ..errors import ImportFileError, UsageError, clip
from ..types import Timing, shape_str
from .output import write_atomically
from .validate import MAX_REASON, Checks, Rejected, validate


def looks_like_json_object(path: Path) -> bool:
    """Whether a file (gunzipped if need be) starts with '{' — a candidate Kernel Tuner or T4 file."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            return f.read(4096).lstrip()[:1] == b"{"
    except (OSError, EOFError, zlib.error):
        return False


#: the problem size given for recorded files that name none (T4 files never do), within problem_size()
_GIVEN_SIZE: ContextVar[tuple[int, ...] | None] = ContextVar("tunesvc_recorded_problem_size", default=None)


@contextlib.contextmanager
def problem_size(shape: tuple[int, ...] | None) -> Iterator[None]:
    """Within: a recorded file that gives no problem size is read as of ``shape`` (``import
    --problem-size``); one that gives another is refused. None changes nothing."""
    token = _GIVEN_SIZE.set(tuple(shape) if shape else None)
    try:
        yield
    finally:
        _GIVEN_SIZE.reset(token)


def load_recorded(path: Path):
    """The header of a Kernel Tuner or T4 file, from a first pass that also checks the whole file (so a
    damaged one is refused before anything is written); ImportFileError if it is neither."""
    from ..replay.files import read_header

    header = read_header(path)
    given = _GIVEN_SIZE.get()
    if given is None:
        return header
    if header.problem_size and header.problem_size != given:
        raise ImportFileError(f"{path}: the file's problem size is {shape_str(header.problem_size)}, not "
                              f"{shape_str(given)} as --problem-size says")
    return dataclasses.replace(header, problem_size=given)


def recorded_records(path: Path, space, checks: Checks | None = None):
    """Yield (entry number, row dict or Rejected) for each config of a recorded file, streamed (its
    second pass: memory stays bounded whatever the file's size)."""
    from ..replay.files import Damaged, entries

    checks = checks or Checks()
    try:
        tpl = templates.get(space.kernel_name) if not space.kernel_name.endswith(".py") else None
    except UsageError:
        tpl = None
    if tpl is None:
        reason = Rejected(f"no template is registered under the kernel name {space.kernel_name[:60]!r}; "
                          "register one with tunesvc.templates.register whose parameters match the file")
        for i in range(1, space.entries + 1):
            yield i, reason
        return
    base = _base_line(path, space, tpl)
    for i, (where, rec) in enumerate(entries(space), 1):
        try:
            if isinstance(rec, Damaged):
                raise Rejected(f"{where} {rec}")
            yield i, validate(_line(base, rec, tpl, space), checks)
        except Rejected as e:
            yield i, e


def _base_line(path: Path, space, tpl) -> dict:
    from ..replay.runner import recorded_fingerprint

    fp = recorded_fingerprint(space)  # the device as replay sees it: one key for one file, imported or replayed
    created = datetime.fromtimestamp(int(path.stat().st_mtime), timezone.utc).isoformat()  # re-imports are identical
    return {"template": tpl.name, "template_hash": tpl.source_hash, "dtype": "float32",
            "shape": shape_str(space.problem_size) if space.problem_size else "",
            "backend": fp.backend, "vendor": fp.vendor, "device_type": fp.device_type,
            "architecture": fp.architecture, "device_name": fp.name, "driver": fp.driver,
            "created_at": created, "tunesvc_version": __version__, "source": space.name}


def _line(base: dict, rec, tpl, space) -> dict:
    if not space.problem_size:
        raise Rejected(f"the {space.format} file gives no problem size; tunesvc keys every record by its shape "
                       "(give it with --problem-size)")
    line = dict(base, config=dict(rec.config), status=rec.status, reason=rec.reason[:MAX_REASON],
                compile_seconds=rec.compile_seconds, time_median=None, time_min=None, time_max=None, time_iqr=None,
                runs=0, gflops=None, gbps=None)
    if rec.ok:
        timing = recorded_timing(rec)
        t = timing.median
        line.update(time_median=t, time_min=timing.min, time_max=timing.max, time_iqr=timing.iqr,
                    runs=timing.count, gflops=_rate(tpl.flops, space.problem_size, t),
                    gbps=_rate(lambda s: tpl.bytes_moved(s, "float32"), space.problem_size, t))
    return line


def recorded_timing(rec) -> Timing:
    """A recorded config's times as tunesvc keeps them: the median and IQR of its samples where the file
    has them (Kernel Tuner's ``time`` is their mean), tunesvc's own statistics where it wrote them, else
    the one recorded time."""
    if rec.samples:
        return Timing.from_samples(list(rec.samples))
    if rec.summary:
        low, high, iqr, runs = rec.summary
        return Timing(rec.time, min(low, rec.time), max(high, rec.time), iqr, runs)
    return Timing(rec.time, rec.time, rec.time, 0.0, 1)


def _rate(amount, shape, seconds: float):
    try:
        return amount(tuple(shape)) / seconds * 1e-9 if seconds > 0 else None
    except Exception:  # a template's FLOP count for a shape it rejects: the rate is unknown, the record is not
        return None


# ---- the other way: a Kernel Tuner cache file --------------------------------------------
#: tunesvc's failure statuses as Kernel Tuner's strings (what replay.files.KT_FAILURES reads back)
KT_STRINGS = {"build": "CompilationFailedConfig", "constraint": "InvalidConfig"}
#: the strings Kernel Tuner's reader takes, as any value of an entry, for a failed config
KT_ERRORS = frozenset(("ErrorConfig", "InvalidConfig", "CompilationFailedConfig", "RuntimeFailedConfig"))
#: seconds -> Kernel Tuner's milliseconds
MS_PER_S = 1e3


@dataclasses.dataclass(frozen=True)
class KernelTunerExport:
    """What ``export --format kerneltuner`` wrote: one problem's configs as a Kernel Tuner cache file."""

    path: str
    template: str
    shape: tuple[int, ...]
    dtype: str
    device_key: str
    configs: int  # entries written
    failed: int  # of which failed configs (Kernel Tuner's error strings)
    skipped: int  # records whose parameters are not the template's (an older version): not written
    bytes: int


def export_kerneltuner(path: str | Path, db=None, device: str | None = None, template: str | None = None,
                       shape: tuple[int, ...] | None = None, dtype: str | None = None) -> KernelTunerExport:
    """Write the records of one problem (one template version, shape, dtype and device) as a Kernel
    Tuner 1.5 cache file (gzip if ``path`` ends in .gz; Kernel Tuner itself reads only plain .json).
    Kernel Tuner's simulation mode replays it: ``kernel_tuner.tune_cache(path)``, or ``tune_kernel``
    with ``simulation_mode=True, cache=path`` and restrictions that keep to the measured configs.
    UsageError when no problem or more than one matches."""
    from .store import Store

    tpl = _known_template(template)
    store = db if isinstance(db, Store) else Store(db, readonly=True)
    try:
        records = [r for r in store.records(tpl.name if tpl else template, device)
                   if (shape is None or tuple(r.shape) == tuple(shape)) and (dtype is None or r.dtype == dtype)]
    finally:
        if store is not db:
            store.close()
    records = _one_problem(records, tpl)
    first = records[0]
    tpl = tpl or _known_template(first.template)
    tune_params = _tune_params(records, tpl if tpl and tpl.source_hash == first.template_hash else None)
    written = [r for r in records if set(r.config) == set(tune_params)]
    text = _cache_text(first, tune_params, written)
    path = Path(path)
    data = text.encode()
    write_atomically(path, gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data, "kerneltuner")
    return KernelTunerExport(str(path), first.template, tuple(first.shape), first.dtype, first.fingerprint.key,
                             len(written), sum(not r.measurement.ok for r in written), len(records) - len(written),
                             path.stat().st_size)


def _known_template(name: str | None):
    """The template of that name or file where one is registered or loadable, else None."""
    if not name:
        return None
    try:
        return templates.get(name)
    except UsageError:
        if name.endswith(".py"):
            raise  # a template file the user named: its error is theirs to see
        return None


def _one_problem(records: list, tpl) -> list:
    """The records of the one problem among ``records``: stale template versions give way to the
    installed one; more than one problem left is a UsageError naming them."""
    problems: dict = {}
    for r in records:
        problems.setdefault(r.problem.key, []).append(r)
    if tpl is not None and any(k[1] == tpl.source_hash for k in problems):
        problems = {k: v for k, v in problems.items() if k[1] == tpl.source_hash}
    if not problems:
        raise UsageError("no records match; a Kernel Tuner cache file holds one problem: pick it with --template, "
                         "--device, --shape and --dtype (see 'tunesvc show')")
    if len(problems) > 1:
        named = "; ".join(f"{v[0].template} {shape_str(v[0].shape)} {v[0].dtype} on {v[0].fingerprint.name} "
                          f"[{v[0].fingerprint.driver}]" for v in list(problems.values())[:4])
        raise UsageError(f"{len(problems)} problems match ({named}{'; ...' if len(problems) > 4 else ''}); a Kernel "
                         "Tuner cache file holds one: narrow it with --template, --device (a fingerprint key), "
                         "--shape and --dtype")
    return next(iter(problems.values()))


def _tune_params(records: list, tpl) -> dict:
    """Kernel Tuner's tune_params: the template's parameters and values in its order (values the
    records hold beside them added), or without the template the values the records hold."""
    params: dict = {p.name: list(p.values) for p in tpl.params} if tpl else {}
    if not params:
        for r in records:
            for name in r.config:
                params.setdefault(name, [])
    seen = {name: {r.config[name] for r in records if name in r.config} for name in params}
    for name, values in params.items():
        values += sorted((v for v in seen[name] if v not in values), key=repr)
    return params


def _cache_text(first, tune_params: dict, records: list) -> str:
    """The file as Kernel Tuner writes it: its header with an open 'cache', one entry per line, closed
    with '}\\n}' (Kernel Tuner takes a file ending otherwise for one cut off, and closes it again)."""
    import json

    header = {"device_name": first.fingerprint.name, "kernel_name": first.template, "problem_size": list(first.shape),
              "tune_params_keys": list(tune_params), "tune_params": tune_params, "objective": ["time"], "cache": {}}
    parts = [json.dumps(header, indent="")[:-3]]
    for r in records:
        values = [r.config[n] for n in tune_params]
        key = ",".join(str(v) for v in values)
        parts.append("\n" + json.dumps({key: _entry(r, dict(zip(tune_params, values)))}, allow_nan=False)[1:-1] + ",")
    text = "".join(parts)
    return (text[:-1] if records else text) + "}\n}"


def _entry(record, params: dict) -> dict:
    """One config as Kernel Tuner records it (milliseconds), with tunesvc's statistics and status beside."""
    m = record.measurement
    entry = dict(params, compile_time=m.compile_seconds * MS_PER_S, verification_time=0.0, benchmark_time=0.0,
                 strategy_time=0.0, framework_time=0.0, timestamp=record.created_at)
    if not m.ok or m.timing is None:
        return dict(entry, time=KT_STRINGS.get(m.status, "RuntimeFailedConfig"), tunesvc_status=m.status,
                    tunesvc_reason=m.reason)
    t = m.timing
    rates = {k: v for k, v in (("GFLOP/s", m.gflops), ("GB/s", m.gbps)) if v is not None}
    if m.reason and m.reason not in KT_ERRORS:  # Kernel Tuner takes any value named like its errors for one
        entry["tunesvc_reason"] = m.reason
    return dict(entry, time=t.median * MS_PER_S, benchmark_time=t.median * t.count * MS_PER_S,
                time_min=t.min * MS_PER_S, time_max=t.max * MS_PER_S, time_iqr=t.iqr * MS_PER_S, runs=t.count, **rates)
