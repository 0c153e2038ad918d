"""The lookup API: the best known config for a problem, fast enough for a framework's hot path.

Resolution goes level by level and stops at the first that answers:
the device's own records (``exact`` shape, else ``nearest_shape`` in log
space), then the template default. A warm lookup is one ``PRAGMA
data_version`` (to notice other processes' writes) and one dict hit.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

from . import templates
from .settings import default_db_path
from .types import Config, DeviceInfo, Fingerprint, LookupResult

_OK_BY_SHAPE = (
    "SELECT shape, config, time_median, gflops FROM measurements "
    "WHERE template = ? AND dtype = ? AND template_hash = ? AND status = 'ok' AND {where} "
    "ORDER BY shape, time_median"
)


class _Reader:
    """A read-only connection and the memo of answers it has given."""

    def __init__(self, path: Path):
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.memo: dict = {}

    def version(self):
        if self.conn is None:
            if not self.path.exists():
                return None
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout = 1000")
        try:
            return self.conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.DatabaseError:  # an empty or foreign file: nothing to answer from
            return -1

    def query(self, sql: str, args) -> list:
        if self.conn is None:
            return []
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # no such table yet
            return []


_readers: dict = {}


def _reader(db) -> _Reader:
    r = _readers.get(db)
    if r is None:
        path = Path(db).expanduser() if db else default_db_path()
        r = _readers[db] = _Reader(path)
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


def _resolve(template, shape, dtype, device, reader: _Reader) -> LookupResult:
    tpl = templates.get(template)
    shape = tpl.parse_shape(shape)
    tpl.check_dtype(dtype)
    device_key, info = resolve_device(device, reader)
    ctx = templates.Context(shape, dtype, info)
    why: list[str] = []
    for level, where, arg in _levels(device_key):
        rows = reader.query(_OK_BY_SHAPE.format(where=where), (tpl.name, dtype, tpl.source_hash, arg))
        found = _nearest_valid(tpl, rows, shape, ctx)
        if found is None:
            why.append(f"{level}: no valid record for this template and dtype" + ("" if rows else " (none stored)"))
            continue
        tuned_shape, config, t, gflops = found
        name = level
        if level == "device":
            name = "exact" if tuned_shape == shape else "nearest_shape"
        return LookupResult(tpl.name, shape, dtype, config, name, t, gflops, tuned_shape, device_key, tuple(why))
    why.append("default: the template's default config, valid on every device")
    return LookupResult(tpl.name, shape, dtype, tpl.default_config(), "default", device_key=device_key, explain=tuple(why))


def _levels(device_key: str):
    yield "device", "device_key = ?", device_key


def _nearest_valid(tpl, rows, shape, ctx):
    """From rows sorted by (shape, time), the fastest config valid for ``shape`` at the nearest tuned shape."""
    by_shape: dict[str, list] = {}
    for s, cfg, t, g in rows:
        by_shape.setdefault(s, []).append((cfg, t, g))
    ranked = sorted(by_shape, key=lambda s: log_distance(_shape(s), shape))
    for s in ranked:
        for cfg, t, g in by_shape[s]:
            config = Config.from_json(cfg)
            if tpl.is_valid(config, ctx):
                return _shape(s), config, t, g
    return None


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("x"))


def clear_cache() -> None:
    """Forget memoised answers and close reader connections (tests, long-running servers)."""
    for r in _readers.values():
        if r.conn is not None:
            r.conn.close()
    _readers.clear()


