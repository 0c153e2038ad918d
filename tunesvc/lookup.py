"""The lookup API: the best known config for a problem, fast enough for a framework's hot path.

An answer always comes back, from the first level that has one:

1. ``exact`` / ``nearest_shape``: the device's own records;
2. ``family``: devices of the same normalised name or architecture (any driver);
3. ``vendor``: devices of the same vendor and device type;
4. ``shipped``: the exports in ``tuning_db/`` (read-only; matched by device the same way);
5. ``default``: the template's default config.

Within a level the nearest tuned shape in log space answers, with its fastest
config that is valid for the asked shape (and device, when known). Records of
an older template source hash are stale and never answer. A warm lookup is one
``PRAGMA data_version`` (to notice other processes' writes) and one dict hit.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sqlite3
from pathlib import Path

from . import templates
from .settings import default_db_path, shipped_db_dir
from .types import Config, DeviceInfo, Fingerprint, LookupResult

_PROBLEM = "template = ? AND template_hash = ? AND dtype = ? AND status = 'ok' AND device_key = ?"
# The distinct shapes of one device, one index seek per shape (a loose index scan) instead of
# a walk over every config of every shape.
_SHAPES = (f"WITH RECURSIVE s(shape) AS (SELECT min(shape) FROM measurements WHERE {_PROBLEM} UNION ALL "
           f"SELECT (SELECT min(shape) FROM measurements WHERE {_PROBLEM} AND shape > s.shape) FROM s "
           "WHERE s.shape IS NOT NULL) SELECT shape FROM s WHERE shape IS NOT NULL")
# The same list from the record_shapes table (kept by the store's writes): one index range.
_SHAPE_LIST = ("SELECT DISTINCT shape FROM record_shapes WHERE template = ? AND template_hash = ? AND dtype = ? "
               "AND device_key IN ({keys})")
_BY_TIME = ("SELECT config, time_median, gflops, device_key FROM measurements WHERE template = ? AND template_hash = ? "
            "AND dtype = ? AND status = 'ok' AND device_key IN ({keys}) AND shape = ? ORDER BY time_median LIMIT ? OFFSET ?")
_MMAP = 1 << 30
_UNION_MAX = 64  # devices whose first configs are merged in one statement; beyond, one sort of them all
_FIRST = 8  # configs fetched first at a shape; the fastest is almost always valid
_SAME_KIND = " WHERE vendor = ? AND device_type = ?"  # the family and vendor levels never look further
_DEVICES = "SELECT device_key, backend, vendor, device_type, architecture, device_name FROM record_devices" + _SAME_KIND
_DEVICES_OLD = ("SELECT DISTINCT device_key, backend, vendor, device_type, architecture, device_name FROM measurements"
                + _SAME_KIND)


# ---- device names ------------------------------------------------------------------------
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


@functools.lru_cache(maxsize=65536)
def _log_shape(text: str) -> tuple[float, ...]:
    """The log of each dimension of a shape text ('64x64x64'): a pure function of few distinct inputs."""
    return tuple(math.log(int(d)) for d in text.split("x"))


#: stored config JSON -> Config (frozen): parsed once per process, as a framework asks again and again
_config = functools.lru_cache(maxsize=65536)(Config.from_json)


# ---- connections -------------------------------------------------------------------------
class _Reader:
    """A read-only connection and the memo of answers it has given."""

    def __init__(self, path: Path):
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.memo: dict = {}
        self.shapes: dict = {}  # (data version, problem, device keys) -> tuned shapes, for cold lookups
        self.last = None  # the data version read last

    def version(self):
        if self.conn is None:
            if not self.path.exists():
                self.last = None
                return None
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout = 1000")
            # a cold lookup touches a few pages anywhere in the file: mapped, they cost no read() each
            self.conn.execute(f"PRAGMA mmap_size = {_MMAP}")
        try:
            self.last = self.conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.DatabaseError:  # an empty or foreign file: nothing to answer from
            self.last = -1
        return self.last

    def query(self, sql: str, args) -> list:
        if self.conn is None:
            return []
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError:  # no such table yet, or not a database
            return []

    def tuned_shapes(self, problem: tuple, keys: list) -> dict[str, tuple]:
        """{shape text: log of each dimension} of every shape tuned on these devices (as of the data
        version the lookup read last)."""
        memo = (self.last, problem, tuple(keys))
        hit = self.shapes.get(memo)
        if hit is None:
            if len(self.shapes) > 4096:
                self.shapes.clear()
            hit = self.shapes[memo] = {shape: _log_shape(shape) for (shape,) in self._shape_rows(problem, keys)}
        return hit

    def _shape_rows(self, problem: tuple, keys: list) -> list:
        """(shape,) of every shape tuned on these devices: one index range of record_shapes per device."""
        if self.conn is None:
            return []
        try:
            return self.conn.execute(_SHAPE_LIST.format(keys=", ".join("?" * len(keys))), (*problem, *keys)).fetchall()
        except sqlite3.DatabaseError:  # a file no writer of this version has migrated yet
            return list(dict.fromkeys(r for k in keys for r in self.query(_SHAPES, (*problem, k) * 2)))

    def devices(self, vendor: str, device_type: str) -> list:
        """(device_key, backend, vendor, device_type, architecture, name) of every device of this
        vendor and type with records."""
        if self.conn is None:
            return []
        try:
            return self.conn.execute(_DEVICES, (vendor, device_type)).fetchall()
        except sqlite3.DatabaseError:  # a database no writer has migrated yet
            return self.query(_DEVICES_OLD, (vendor, device_type))


class _Shipped(_Reader):
    """The exports in ``tuning_db/``, loaded once into memory through the validated import."""

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.loaded = False
        self.problems: list[str] = []  # files that could not be read, for explain

    def version(self):
        self.last = 0  # loaded once, never written
        if not self.loaded:
            self.loaded = True
            files = sorted(self.path.glob("*.jsonl")) + sorted(self.path.glob("*.jsonl.gz")) if self.path.is_dir() else []
            if files:
                self.conn = self._load(files)
        return 0

    def _load(self, files) -> sqlite3.Connection:
        from .cache import Store
        from .cache.exchange import import_files
        from .errors import ImportFileError

        store = Store(":memory:")
        for f in files:  # one broken file must not hide the others, nor break a lookup
            try:
                import_files([f], store)
            except ImportFileError as e:
                self.problems.append(f"shipped file skipped: {e}")
        return store.db.conn


_readers: dict = {}


def _reader(db) -> _Reader:
    r = _readers.get(db)
    if r is None:
        path = Path(db).expanduser() if db else default_db_path()
        r = _readers[db] = _Reader(path)
    return r


def _shipped() -> _Reader:
    r = _readers.get(_Shipped)
    if r is None:
        r = _readers[_Shipped] = _Shipped(shipped_db_dir())
    return r


def resolve_device(device, reader: _Reader | None = None) -> tuple[str, DeviceInfo | None]:
    """(fingerprint key, DeviceInfo if known) for an id, name, fingerprint key, DeviceInfo or None.

    Ids and names remembered in the database resolve without touching any driver.
    """
    if isinstance(device, DeviceInfo):
        return device.fingerprint.key, device
    if isinstance(device, Fingerprint):
        return device.key, None
    if isinstance(device, str) and device.count("|") == 5:
        return device, None
    if isinstance(device, str) and reader is not None and reader.version() is not None:
        rows = reader.query("SELECT info FROM devices WHERE id = ? OR device_key = ? LIMIT 1", (device, device))
        if rows:
            info = DeviceInfo.from_dict(json.loads(rows[0][0]))
            return info.fingerprint.key, info
    from .devices import select_device  # needs the driver

    info = select_device(device)
    return info.fingerprint.key, info


def log_distance(a, b) -> float:
    return math.sqrt(sum((math.log(x) - math.log(y)) ** 2 for x, y in zip(a, b)))


def lookup(template, shape, dtype: str = "float32", device=None, db=None) -> LookupResult:
    """The best known config for ``template`` at ``shape`` on ``device`` (default device if None)."""
    reader = _reader(db)
    key = (template, shape if isinstance(shape, (str, tuple)) else tuple(shape), dtype,
           device if device is None or isinstance(device, str) else getattr(device, "key", None) or device.fingerprint.key)
    version = reader.version()
    hit = reader.memo.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    result = _resolve(template, shape, dtype, device, reader)
    reader.memo[key] = (version, result)
    return result


# ---- resolution --------------------------------------------------------------------------
def _resolve(template, shape, dtype, device, reader: _Reader) -> LookupResult:
    tpl = templates.get(template)
    shape = tpl.parse_shape(shape)
    tpl.check_dtype(dtype)
    device_key, info = resolve_device(device, reader)
    ctx = templates.Context(shape, dtype, info)
    problem = (tpl.name, tpl.source_hash, dtype)
    why: list[str] = []
    for source, src in (("database", reader), ("shipped", _shipped())):
        version = reader.last if src is reader else src.version()  # lookup() has just read the database's
        if version is None or src.conn is None:
            why.append(f"{source}: {'no tuning database at ' + str(src.path) if source == 'database' else 'no shipped results in ' + str(src.path)}")
            continue
        why.extend(getattr(src, "problems", ()))
        for level, keys, label in _levels(device_key, src):
            found, tuned = _nearest_valid(tpl, src, problem, keys, shape, ctx) if keys else (None, 0)
            if found is None:
                why.append(f"{source} {level} ({label}): " + _none_because(keys, tuned, tpl.name, dtype))
                continue
            tuned_shape, config, t, gflops, by = found
            name = "shipped" if source == "shipped" else level
            if level == "exact":
                name = ("exact" if tuned_shape == shape else "nearest_shape") if source == "database" else "shipped"
            where = f"{name} ({level} device match)" if source == "shipped" else name
            other = Fingerprint.from_key(by)
            driver = "" if by == device_key else (
                f" measured with another driver ({other.driver}; this device: {Fingerprint.from_key(device_key).driver})"
                if device_key.count("|") == 5 and other.family == Fingerprint.from_key(device_key).family else f" ({other.driver})")
            why.append(f"{where}: answered by {source} records of {other.name!r}{driver} at {'x'.join(map(str, tuned_shape))}")
            return LookupResult(tpl.name, shape, dtype, config, name, t, gflops, tuned_shape, device_key, tuple(why))
    why.append("default: the template's default config, valid on every device")
    return LookupResult(tpl.name, shape, dtype, tpl.default_config(), "default", device_key=device_key, explain=tuple(why))


def _levels(device_key: str, src: _Reader):
    """(level, device keys, description) from the exact device out to its vendor; lazily, so an
    exact answer never reads the device list."""
    yield "exact", [device_key], "this device"
    try:
        fp = Fingerprint.from_key(device_key)
    except ValueError:
        return
    devices = src.devices(fp.vendor, fp.device_type)
    name = normalise_name(fp.name)
    family, vendor = [], []
    for key, _backend, v, dtype, arch, dname in devices:
        if key == device_key or v != fp.vendor or dtype != fp.device_type:
            continue
        same = normalise_name(dname) == name or (fp.architecture and arch == fp.architecture)
        (family if same else vendor).append(key)
    arch = f" or architecture {fp.architecture!r}" if fp.architecture else ""
    yield "family", family, f"the same hardware: name {name!r}{arch}, another driver"
    yield "vendor", vendor, f"other {fp.vendor} {fp.device_type} devices"


def _none_because(keys: list, tuned: int, template: str, dtype: str) -> str:
    if not keys:
        return "no such device has records"
    if not tuned:
        return f"no ok record of the current {template} version for {dtype}"
    return f"{tuned} tuned shape(s), but no config among them is valid for this shape and device"


def _nearest_valid(tpl, src: _Reader, problem: tuple, keys: list, shape, ctx):
    """(the fastest config valid for ``shape`` at the nearest tuned shape of these devices, or None;
    how many shapes were tuned)."""
    marks = ", ".join("?" * len(keys))
    shapes = src.tuned_shapes(problem, keys)
    want = [math.log(d) for d in shape]
    try:
        ranked = sorted(shapes, key=lambda s: (math.dist(shapes[s], want), s))
    except ValueError:  # a stored shape of another rank: compare the dimensions both have
        ranked = sorted(shapes, key=lambda s: (sum((a - b) ** 2 for a, b in zip(shapes[s], want)), s))
    for s in ranked:
        for rows in _fastest(src, problem, keys, marks, s):
            for cfg, t, g, by in rows:
                config = _config(cfg)
                if tpl.is_valid(config, ctx):
                    return (_shape(s), config, t, g, by), len(shapes)
    return None, len(shapes)


def _fastest(src: _Reader, problem: tuple, keys: list, marks: str, shape: str):
    """The configs tuned at ``shape`` on these devices, fastest first, in two helpings: the first
    few (one index range per device, merged in one statement, so several devices need no sort of
    all their records), then the rest."""
    if len(keys) == 1 or len(keys) > _UNION_MAX:  # SQLite allows 500 terms in a compound SELECT
        yield src.query(_BY_TIME.format(keys=marks), (*problem, *keys, shape, _FIRST, 0))
    else:
        one = f"SELECT * FROM ({_BY_TIME.format(keys='?')})"
        sql = " UNION ALL ".join([one] * len(keys)) + f" ORDER BY 2 LIMIT {_FIRST}"
        yield src.query(sql, [a for key in keys for a in (*problem, key, shape, _FIRST, 0)])
    yield src.query(_BY_TIME.format(keys=marks), (*problem, *keys, shape, -1, _FIRST))


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("x"))


def clear_cache() -> None:
    """Forget memoised answers and close reader connections (tests, long-running servers)."""
    for r in _readers.values():
        if r.conn is not None:
            r.conn.close()
    _readers.clear()
