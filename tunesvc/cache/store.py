"""The tuning database: every measured config, in SQLite through sqlite-utils.

One row per (device, template, template source hash, dtype, shape, config):
named columns, the config as canonical JSON (never positional, never pickle),
WAL so readers never wait on a writer, one transaction per write.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Iterator

import sqlite_utils

from .._version import __version__
from ..errors import StoreError
from ..settings import default_db_path
from ..types import Config, DeviceInfo, Fingerprint, Measurement, Record, Timing, shape_str

SCHEMA_VERSION = 1
TABLE = "measurements"
CEILINGS = "ceilings"

COLUMNS = {
    "id": int,
    "device_key": str,
    "backend": str,
    "vendor": str,
    "device_type": str,
    "architecture": str,
    "device_name": str,
    "driver": str,
    "template": str,
    "template_hash": str,
    "dtype": str,
    "shape": str,
    "config": str,
    "status": str,
    "reason": str,
    "time_median": float,
    "time_min": float,
    "time_max": float,
    "time_iqr": float,
    "runs": int,
    "gflops": float,
    "gbps": float,
    "compile_seconds": float,
    "schema_version": int,
    "tunesvc_version": str,
    "created_at": str,
    "source": str,
}
KEY = ("device_key", "template", "template_hash", "dtype", "shape", "config")
LOOKUP_INDEX = ("template", "template_hash", "dtype", "status", "device_key", "shape", "time_median")
RECORD_DEVICES = "record_devices"
DEVICE_COLUMNS = ("device_key", "backend", "vendor", "device_type", "architecture", "device_name")
RECORD_SHAPES = "record_shapes"
SHAPE_COLUMNS = ("template", "template_hash", "dtype", "device_key", "shape")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("x"))


def record_to_row(r: Record) -> dict:
    m, fp, t = r.measurement, r.fingerprint, r.measurement.timing
    return {
        "device_key": fp.key,
        "backend": fp.backend,
        "vendor": fp.vendor,
        "device_type": fp.device_type,
        "architecture": fp.architecture,
        "device_name": fp.name,
        "driver": fp.driver,
        "template": r.template,
        "template_hash": r.template_hash,
        "dtype": r.dtype,
        "shape": shape_str(r.shape),
        "config": m.config.key,
        "status": m.status,
        "reason": m.reason,
        "time_median": t.median if t else None,
        "time_min": t.min if t else None,
        "time_max": t.max if t else None,
        "time_iqr": t.iqr if t else None,
        "runs": t.count if t else 0,
        "gflops": m.gflops,
        "gbps": m.gbps,
        "compile_seconds": m.compile_seconds,
        "schema_version": SCHEMA_VERSION,
        "tunesvc_version": r.tunesvc_version or __version__,
        "created_at": r.created_at or now_iso(),
        "source": r.source,
    }


def row_to_record(row: dict) -> Record:
    timing = None
    if row["time_median"] is not None:
        timing = Timing(row["time_median"], row["time_min"], row["time_max"], row["time_iqr"] or 0.0, row["runs"] or 0)
    m = Measurement(
        Config.from_json(row["config"]),
        row["status"],
        row["reason"] or "",
        timing,
        row["gflops"],
        row["gbps"],
        row["compile_seconds"] or 0.0,
    )
    fp = Fingerprint(row["backend"], row["vendor"], row["device_type"], row["architecture"], row["device_name"], row["driver"])
    return Record(fp, row["template"], row["template_hash"], row["dtype"], parse_shape(row["shape"]), m,
                  row["created_at"], row["tunesvc_version"], row["source"])


class Store:
    """A tuning database file. Open it with a path, or None for the default location."""

    def __init__(self, path: str | Path | None = None, readonly: bool = False):
        self.path = Path(path).expanduser() if path else default_db_path()
        self.readonly = readonly
        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(f"tuning database {str(self.path)!r} does not exist; tune something first or pass --db")
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            self.db = sqlite_utils.Database(conn)
            if not readonly:
                self._retrying(self._migrate)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open tuning database {str(self.path)!r}: {e}; pass another file with --db") from None

    # ---- schema -------------------------------------------------------------------------
    def _migrate(self) -> None:
        db = self.db
        if db.journal_mode != "wal":
            db.enable_wal()
        with db.conn:
            if TABLE not in db.table_names():
                db[TABLE].create(COLUMNS, pk="id", not_null={"device_key", "template", "template_hash", "dtype", "shape", "config", "status"})
                db[TABLE].create_index(KEY, unique=True, if_not_exists=True)
                db[TABLE].create_index(("template", "dtype", "status", "device_key"), if_not_exists=True)
            else:  # columns added by later versions: add them, keep every row
                have = set(db[TABLE].columns_dict)
                for name, kind in COLUMNS.items():
                    if name not in have:
                        db[TABLE].add_column(name, kind)
            # the lookup's path: problem, then device, then shapes and their fastest configs, from the index alone
            db[TABLE].create_index(LOOKUP_INDEX, index_name="measurements_lookup", if_not_exists=True)
            if RECORD_DEVICES not in db.table_names():
                self._create_record_devices()
            if RECORD_SHAPES not in db.table_names():
                self._create_record_shapes()
            db.execute(f"DROP TRIGGER IF EXISTS {RECORD_DEVICES}_add")  # kept the table by trigger before 0.1.0 shipped
            if "devices" not in db.table_names():
                db["devices"].create({"device_key": str, "id": str, "info": str, "updated_at": str}, pk="device_key")
                db["devices"].create_index(("id",), if_not_exists=True)
            if "meta" not in db.table_names():
                db["meta"].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
            if CEILINGS not in db.table_names():  # roofline ceilings, one row per device (tunesvc.measure.roofline)
                db[CEILINGS].create({"device_key": str, "gbps": float, "gflops": float, "details": str, "measured_at": str}, pk="device_key")

    def _create_record_devices(self) -> None:
        """Every device that has records: the lookup's fallback levels pick devices of the same
        family or vendor from it without scanning the records. ``_upsert`` keeps it current
        (a trigger did too, at twice the cost of an insert)."""
        self.db[RECORD_DEVICES].create({c: str for c in DEVICE_COLUMNS}, pk="device_key")
        self.db.execute(f"INSERT OR IGNORE INTO {RECORD_DEVICES} SELECT DISTINCT {', '.join(DEVICE_COLUMNS)} FROM {TABLE}")

    def _create_record_shapes(self) -> None:
        """Every shape with an ok record, per problem and device: a cold lookup reads a device's
        tuned shapes from it in one index range instead of seeking through its records."""
        self.db[RECORD_SHAPES].create({c: str for c in SHAPE_COLUMNS}, pk=SHAPE_COLUMNS)
        self.db.execute(f"INSERT OR IGNORE INTO {RECORD_SHAPES} SELECT DISTINCT {', '.join(SHAPE_COLUMNS)} FROM {TABLE} "
                        "WHERE status = 'ok'")

    # ---- writes -------------------------------------------------------------------------
    def put(self, record: Record) -> None:
        """Insert or replace one measurement, in its own transaction."""
        self.put_many([record])

    def put_many(self, records: Iterable[Record]) -> int:
        rows = [record_to_row(r) for r in records]

        def write():
            with self.db.conn:
                self._upsert(rows)

        self._retrying(write)
        return len(rows)

    def _retrying(self, write, attempts: int = 8):
        """Run ``write``; retry it while other processes hold the lock beyond the busy timeout,
        or race this one to create the same fresh schema (each step re-checks what exists)."""
        for attempt in range(attempts):
            try:
                return write()
            except (sqlite3.OperationalError, sqlite3.IntegrityError) as e:
                transient = any(s in str(e) for s in ("locked", "busy", "already exists", "UNIQUE constraint failed: meta"))
                if not transient or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2**attempt)

    def _upsert(self, rows: list[dict]) -> None:
        if not rows:
            return
        cols = list(rows[0])
        sql = (
            f"INSERT INTO {TABLE} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in cols if c not in KEY)
        )
        self.db.conn.executemany(sql, map(itemgetter(*cols), rows))
        devices = set(map(itemgetter(*DEVICE_COLUMNS), rows))
        self.db.conn.executemany(f"INSERT OR IGNORE INTO {RECORD_DEVICES} VALUES ({', '.join('?' * len(DEVICE_COLUMNS))})", devices)
        shapes = set(map(itemgetter(*SHAPE_COLUMNS), (r for r in rows if r["status"] == "ok")))
        self.db.conn.executemany(f"INSERT OR IGNORE INTO {RECORD_SHAPES} VALUES ({', '.join('?' * len(SHAPE_COLUMNS))})", shapes)

    def put_device(self, info: DeviceInfo) -> None:
        """Remember a device's description, so later lookups by id need no driver."""
        with self.db.conn:
            self.db["devices"].upsert(
                {"device_key": info.fingerprint.key, "id": info.id, "info": json.dumps(info.to_dict(), sort_keys=True), "updated_at": now_iso()},
                pk="device_key",
            )

    def put_ceilings(self, device_key: str, gbps: float, gflops: float, measured_at: str, details: dict) -> None:
        """Store a device's measured roofline ceilings, replacing older ones."""
        with self.db.conn:
            self.db[CEILINGS].upsert({"device_key": device_key, "gbps": gbps, "gflops": gflops,
                                      "details": json.dumps(details, sort_keys=True), "measured_at": measured_at}, pk="device_key")

    # ---- reads --------------------------------------------------------------------------
    def ceilings(self, device_key: str) -> dict | None:
        """A device's stored roofline ceilings (gbps, gflops, measured_at, details), or None."""
        if CEILINGS not in self.db.table_names():  # a read-only store of an older file
            return None
        row = self.db.execute(f"SELECT gbps, gflops, measured_at, details FROM {CEILINGS} WHERE device_key = ?", (device_key,)).fetchone()
        return {"gbps": row[0], "gflops": row[1], "measured_at": row[2], "details": json.loads(row[3] or "{}")} if row else None

    def device(self, spec: str) -> DeviceInfo | None:
        """A remembered device by id (``opencl:0:0``) or fingerprint key."""
        row = self.db.execute("SELECT info FROM devices WHERE device_key = ? OR id = ? ORDER BY updated_at DESC LIMIT 1", (spec, spec)).fetchone()
        return DeviceInfo.from_dict(json.loads(row[0])) if row else None

    def measurements(self, device_key: str, template: str, template_hash: str, dtype: str, shape) -> dict[Config, Measurement]:
        """What was measured before for exactly this problem."""
        rows = self.db.query(
            f"SELECT * FROM {TABLE} WHERE device_key = ? AND template = ? AND template_hash = ? AND dtype = ? AND shape = ?",
            (device_key, template, template_hash, dtype, shape_str(shape)),
        )
        return {r.config: r.measurement for r in map(row_to_record, rows)}

    def records(self, template: str | None = None, device: str | None = None, status: str | None = None) -> Iterator[Record]:
        """Stored records, filtered; ``device`` matches a fingerprint key or a name substring."""
        where, args = [], []
        if template:
            where.append("template = ?")
            args.append(template)
        if device:
            where.append("(device_key = ? OR device_name LIKE ?)")
            args += [device, f"%{device}%"]
        if status:
            where.append("status = ?")
            args.append(status)
        sql = f"SELECT * FROM {TABLE}" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY template, device_key, dtype, shape, status != 'ok', time_median"
        return map(row_to_record, self.db.query(sql, args))

    def count(self) -> int:
        return self.db[TABLE].count if TABLE in self.db.table_names() else 0

    def close(self) -> None:
        self.db.conn.close()
