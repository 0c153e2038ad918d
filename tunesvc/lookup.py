"""The lookup API: the best known config for a problem, fast enough for a framework's hot path.

This module is the fallback policy; the reading is :mod:`tunesvc.cache.reader`'s and how devices
relate is :func:`tunesvc.identity.relation`'s. An answer always comes back, from the first level
that has one:

1. ``exact`` / ``nearest_shape``: the device's own records;
2. ``family``: the same hardware under another driver or backend (same normalised name or architecture);
3. ``vendor``: devices of the same vendor and device type;
4. ``shipped``: the exports in ``tuning_db/`` (read-only; matched by device the same way);
5. ``default``: the template's default config.

Within a level the nearest tuned shape in log space answers, with its fastest
config that is valid for the asked shape (and device, when known). Records of
an older template source hash are stale and never answer. A warm lookup is one
``PRAGMA data_version`` (to notice other processes' writes) and one dict hit.

An answer below ``exact`` is *demand*: the problem, counted in memory
(:mod:`tunesvc.cache.demand`) and written into the database the lookup read by a
background thread, never inside the call (``$TUNESVC_DEMAND=0`` turns it off).
"""

from __future__ import annotations

import functools
import logging
import os

from . import templates
from .cache.demand import BUFFER as _DEMAND
from .cache.reader import Reader, Shipped
from .errors import UnknownTemplateError, clip
from .identity import normalise_name, normalise_vendor, relation
from .settings import ENV_DB, ServerURL, db_path, demand_recording, shipped_db_dir
from .types import Config, DeviceInfo, Fingerprint, LookupResult, Problem, shape_distance, shape_str

#: stored config JSON -> Config (frozen): parsed once per process, as a framework asks again and again
_config = functools.lru_cache(maxsize=65536)(Config.from_json)
log = logging.getLogger(__name__)

# ---- readers -----------------------------------------------------------------------------
_readers: dict = {}  # absolute database path (or Shipped) -> its reader
_named: dict = {}  # a name that always means one file -> its reader, so a warm lookup resolves no path


def _reader(db) -> Reader:
    """The reader of the database ``db`` names (see :func:`tunesvc.settings.db_path`), one per file."""
    # None names the file $TUNESVC_DB names, else the one under $XDG_CACHE_HOME (fixed for a process)
    name = db if db else (None, os.environ.get(ENV_DB))
    r = _named.get(name)
    if r is None:
        path = db_path(db)
        r = _readers.get(path)
        if r is None:
            r = _readers[path] = Reader(path)  # type: ignore[arg-type]  # a ServerURL makes a ServerReader
        if os.path.isabs(db or name[1] or "/"):  # a relative name means another file in another directory
            _named[name] = r
    return r


def _shipped() -> Reader:
    r = _readers.get(Shipped)
    if r is None:
        r = _readers[Shipped] = Shipped(shipped_db_dir())
    return r


def resolve_device(device, reader: Reader | None = None) -> tuple[Fingerprint, DeviceInfo | None]:
    """(fingerprint, DeviceInfo if known) for an id, name, fingerprint key, DeviceInfo or None.

    Ids and names remembered in the database resolve without touching any driver.
    """
    if isinstance(device, DeviceInfo):
        return device.fingerprint, device
    if isinstance(device, Fingerprint):
        return device, None
    if isinstance(device, str) and device.count("|") == 5:
        return Fingerprint.from_key(device), None
    if isinstance(device, str) and reader is not None and reader.version() is not None:
        info = reader.device_info(device)
        if info is not None:
            return info.fingerprint, info
    from .devices import select_device  # needs the driver

    info = select_device(device)
    return info.fingerprint, info


def lookup(template, shape, dtype: str = "float32", device=None, db=None) -> LookupResult:
    """The best known config for ``template`` at ``shape`` on ``device`` (default device if None).

    A database that exists but cannot be read (not SQLite, truncated, unreadable for this user, not a
    regular file) never passes for one without records: the answer then comes from a fallback level,
    ``explain`` says why, and one warning per database and process goes to the ``tunesvc.lookup`` logger."""
    reader = _reader(db)
    key = (template, shape if isinstance(shape, (str, tuple)) else tuple(shape), dtype,
           device if device is None or isinstance(device, str) else getattr(device, "key", None) or device.fingerprint.key)
    version = reader.version()
    hit = reader.memo.get(key)
    if hit is not None and hit[0] == version and reader.problem is None:
        if hit[2] is not None:  # a miss: counted (an exact answer pays this test only)
            hit[2].append(1)
        return hit[1]
    result, problem = _resolve(template, shape, dtype, device, reader)
    if reader.problem is None:
        miss = _miss(result, problem, reader, version)
        reader.memo[key] = (version, result, miss)
        if miss is not None:
            miss.append(1)
    else:
        _warn(reader)
    return result


def _miss(result: LookupResult, problem: Problem, reader: Reader, version) -> bytearray | None:
    """The demand tally of an answer below exact from a database that exists (None: nothing to count)."""
    if result.level == "exact" or version is None or not demand_recording():
        return None
    target = reader.path.url if isinstance(reader.path, ServerURL) else str(reader.path)
    return _DEMAND.tally((target, problem.template, problem.template_hash, problem.dtype, shape_str(problem.shape),
                          problem.device.key))


_warned: set = set()  # databases already warned about in this process


def _warn(reader: Reader) -> None:
    if reader.path not in _warned:
        _warned.add(reader.path)
        log.warning("cannot read the tuning database %s (%s); lookups answer from the fallback levels (shipped "
                    "results, the template default) until it can be read", reader.path, reader.problem)


def database_problem(db=None) -> str | None:
    """Why the tuning database ``db`` names exists but cannot be read, or None (a missing one is no
    problem: a lookup never creates one). The CLI refuses to answer from a fallback then."""
    reader = _reader(db)
    reader.version()
    return reader.problem


# ---- resolution --------------------------------------------------------------------------
def get_template(name):
    """The template ``name`` names, as templates.get; a name no file system takes is an unknown template."""
    try:
        return templates.get(name)
    except OSError as e:  # a "path" no file system takes (a 131 KB name ending in .py)
        raise UnknownTemplateError(f"unknown template {clip(name)}: {e.strerror or e}") from None


def _resolve(template, shape, dtype, device, reader: Reader) -> tuple[LookupResult, Problem]:
    tpl = get_template(template)
    shape = tpl.parse_shape(shape)
    tpl.check_dtype(dtype)
    fp, info = resolve_device(device, reader)
    ctx = templates.Context(shape, dtype, info)
    problem = Problem(tpl.name, tpl.source_hash, shape, dtype, fp)
    why: list[str] = []
    for source, src in (("database", reader), ("shipped", _shipped())):
        version = reader.last if src is reader else src.version()  # lookup() has just read the database's
        if version is None or not src.is_open:
            why.append(_unavailable(source, src))
            continue
        why.extend(getattr(src, "problems", ()))
        for level, keys, label in _levels(problem.device, src):
            found, tuned = _nearest_valid(tpl, src, problem, keys, ctx) if keys else (None, 0)
            if src.problem:  # the file failed while it was read: what it said so far proves nothing
                why.append(_unavailable(source, src))
                break
            if found is None:
                why.append(f"{source} {level} ({label}): " + _none_because(keys, tuned, tpl.name, dtype))
                continue
            tuned_shape, config, t, gflops, by = found
            name = level if source == "database" else "shipped"
            if level == "exact" and source == "database":
                name = "exact" if tuned_shape == shape else "nearest_shape"
            where = f"{name} ({level} device match)" if source == "shipped" else name
            why.append(f"{where}: answered by {source} records of {_answered_by(by, problem.device)} at "
                       f"{shape_str(tuned_shape)}{_fallback(reader)}")
            return LookupResult(tpl.name, shape, dtype, config, name, t, gflops, tuned_shape, fp.key, tuple(why)), problem
    why.append(f"default: the template's default config, valid on every device{_fallback(reader)}")
    return LookupResult(tpl.name, shape, dtype, tpl.default_config(), "default", device_key=fp.key,
                        explain=tuple(why)), problem


def _unavailable(source: str, src: Reader) -> str:
    if source == "shipped":
        return f"shipped: no shipped results in {src.path}"
    if src.problem:
        return f"database: cannot read the tuning database {src.path}: {src.problem}"
    return f"database: no tuning database at {src.path}"


def _fallback(reader: Reader) -> str:
    """What an answer from a later level says when the database could not be read."""
    return " (a fallback: the tuning database could not be read)" if reader.problem else ""


def _answered_by(by: str, asker: Fingerprint) -> str:
    """Whose records answered, and under which driver, for explain."""
    other = Fingerprint.from_key(by)
    if by == asker.key:
        return repr(other.name)
    if relation(asker, other) == "family":
        return f"{other.name!r} measured with another driver ({other.driver}; this device: {asker.driver})"
    return f"{other.name!r} ({other.driver})"


def _levels(fp: Fingerprint, src: Reader):
    """(level, device keys, description) from the exact device out to its vendor; lazily, so an
    exact answer never reads the device list."""
    yield "exact", [fp.key], "this device"
    family, vendor = [], []
    for other in src.devices(fp.device_type, normalise_vendor(fp.vendor)):
        kind = relation(fp, other)
        if kind == "family":
            family.append(other.key)
        elif kind == "vendor":
            vendor.append(other.key)
    arch = f" or architecture {fp.architecture!r}" if fp.architecture else ""
    yield "family", family, f"the same hardware: name {normalise_name(fp.name)!r}{arch}, another driver"
    yield "vendor", vendor, f"other {fp.vendor} {fp.device_type} devices"


def _none_because(keys: list, tuned: int, template: str, dtype: str) -> str:
    if not keys:
        return "no such device has records"
    if not tuned:
        return f"no ok record of the current {template} version for {dtype}"
    return f"{tuned} tuned shape(s), but no config among them is valid for this shape and device"


def _nearest_valid(tpl, src: Reader, problem: Problem, keys: list, ctx):
    """(the fastest config valid for the problem's shape at the nearest tuned shape of these devices,
    or None; how many shapes were tuned)."""
    shapes = src.tuned_shapes(problem, keys)
    ranked = sorted(shapes, key=lambda ts: (shape_distance(ts[1], problem.shape), ts[0]))
    for text, tuned in ranked:
        for rows in src.fastest(problem, keys, text):
            for cfg, t, g, by in rows:
                config = _config(cfg)
                if tpl.is_valid(config, ctx):
                    return (tuned, config, t, g, by), len(shapes)
    return None, len(shapes)


def clear_cache() -> None:
    """Forget memoised answers and close reader connections (tests, long-running servers)."""
    for r in _readers.values():
        r.close()
    _readers.clear()
    _named.clear()
    _warned.clear()
