"""The tuning database: every measured config, in SQLite through sqlite-utils. The only writer.

One row per (device, template, template source hash, dtype, shape, config):
named columns, the config as canonical JSON (never positional, never pickle),
WAL so readers never wait on a writer, one transaction per write. The schema and
the row <-> record conversion are :mod:`.schema`'s; the lookup reads through
:mod:`.reader`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Iterator

import sqlite_utils

from ..errors import StoreError
from ..settings import db_path
from ..types import Config, DeviceInfo, Measurement, Problem, Record
# SCHEMA_VERSION and the table names stay importable from here, where they were (benchmarks/db_scale.py)
from .schema import (CEILINGS, DEVICE_COLUMNS, DEVICE_INFO, DEVICES, KEY, RECORD_DEVICES, RECORD_SHAPES,  # noqa: F401
                     SCHEMA_VERSION, SHAPE_COLUMNS, TABLE, cannot_open, migrate, now_iso, record_filter,
                     record_to_row, row_to_record)

#: the path of a store that lives in memory only (the shipped results, loaded once per process)
MEMORY = ":memory:"


class Store:
    """A tuning database file. Open it with a path, or None for the default location
    (:func:`tunesvc.settings.db_path`)."""

    def __init__(self, path: str | Path | None = None, readonly: bool = False):
        self.path = Path(MEMORY) if str(path) == MEMORY else db_path(path)
        self.readonly = readonly
        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(f"tuning database {str(self.path)!r} does not exist; tune something first or pass --db")
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                conn.execute("SELECT count(*) FROM sqlite_master")  # a file that is not a database fails here, not mid-command
            else:
                if str(self.path) != MEMORY:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            self.db = sqlite_utils.Database(conn)
            if not readonly:
                self._retrying(lambda: migrate(self.db))
        except sqlite3.DatabaseError as e:
            raise cannot_open(self.path, e) from None

    # ---- writes -------------------------------------------------------------------------
    def put(self, record: Record) -> None:
        """Insert or replace one measurement, in its own transaction."""
        self.put_many([record])

    def put_many(self, records: Iterable[Record]) -> int:
        """Insert or replace measurements, in one transaction; how many."""
        rows = [record_to_row(r) for r in records]

        def write():
            with self.db.conn:
                self.upsert_rows(rows)

        try:
            self._retrying(write)
        except sqlite3.Error as e:
            raise self._write_error(e) from None
        return len(rows)

    @contextlib.contextmanager
    def transaction(self, commit: bool = True):
        """One write transaction for :meth:`upsert_rows` (a bulk merge): the write lock is taken at once
        (``BEGIN IMMEDIATE``), and everything is rolled back on any error, or at the end when
        ``commit`` is False (a dry run)."""
        conn = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self._write_error(e) from None
        try:
            yield self
        except BaseException as e:
            conn.rollback()
            if isinstance(e, sqlite3.Error):
                raise self._write_error(e) from None
            raise
        try:
            if commit:
                conn.commit()
            else:
                conn.rollback()
        except sqlite3.Error as e:
            raise self._write_error(e) from None

    def upsert_rows(self, rows: list[dict]) -> None:
        """Insert or replace schema rows (column -> value, as :func:`.schema.record_to_row` or the import's
        validation makes them), and the devices and shapes they add, inside the caller's transaction."""
        if not rows:
            return
        cols = list(rows[0])
        sql = (f"INSERT INTO {TABLE} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
               f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
               + ", ".join(f"{c} = excluded.{c}" for c in cols if c not in KEY))
        conn = self.db.conn
        conn.executemany(sql, map(itemgetter(*cols), rows))
        devices = set(map(itemgetter(*DEVICE_COLUMNS), rows))
        conn.executemany(f"INSERT OR IGNORE INTO {RECORD_DEVICES} VALUES ({', '.join('?' * len(DEVICE_COLUMNS))})", devices)
        shapes = set(map(itemgetter(*SHAPE_COLUMNS), (r for r in rows if r["status"] == "ok")))
        conn.executemany(f"INSERT OR IGNORE INTO {RECORD_SHAPES} VALUES ({', '.join('?' * len(SHAPE_COLUMNS))})", shapes)

    def put_device(self, info: DeviceInfo) -> None:
        """Remember a device's description, so later lookups by id need no driver."""
        with self.db.conn:
            self.db[DEVICES].upsert(
                {"device_key": info.fingerprint.key, "id": info.id, "info": json.dumps(info.to_dict(), sort_keys=True), "updated_at": now_iso()},
                pk="device_key",
            )

    def put_ceilings(self, device_key: str, gbps: float, gflops: float, measured_at: str, details: dict) -> None:
        """Store a device's measured roofline ceilings, replacing older ones."""
        with self.db.conn:
            self.db[CEILINGS].upsert({"device_key": device_key, "gbps": gbps, "gflops": gflops,
                                      "details": json.dumps(details, sort_keys=True), "measured_at": measured_at}, pk="device_key")

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

    def _write_error(self, e: sqlite3.Error) -> StoreError:
        return StoreError(f"cannot write to tuning database {str(self.path)!r}: {e}; check that it is a writable "
                          "tuning database, or pass another file with --db")

    # ---- reads --------------------------------------------------------------------------
    def read(self, sql: str, args=()) -> sqlite3.Cursor:
        """The rows of one query (built from :mod:`.schema`'s names), for the export and the merge."""
        return self.db.conn.execute(sql, args)

    @contextlib.contextmanager
    def scanning(self, cache_kib: int, mmap_bytes: int):
        """A larger page cache and a mapping of the file while the block runs (a long ordered scan visits
        table pages at random), the connection's own settings after it."""
        conn = self.db.conn
        before = {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("cache_size", "mmap_size")}
        conn.execute(f"PRAGMA cache_size = {-int(cache_kib)}")
        conn.execute(f"PRAGMA mmap_size = {int(mmap_bytes)}")
        try:
            yield self
        finally:
            for p, v in before.items():
                conn.execute(f"PRAGMA {p} = {int(v)}")

    def ceilings(self, device_key: str) -> dict | None:
        """A device's stored roofline ceilings (gbps, gflops, measured_at, details), or None."""
        if CEILINGS not in self.db.table_names():  # a read-only store of an older file
            return None
        row = self.db.execute(f"SELECT gbps, gflops, measured_at, details FROM {CEILINGS} WHERE device_key = ?", (device_key,)).fetchone()
        return {"gbps": row[0], "gflops": row[1], "measured_at": row[2], "details": json.loads(row[3] or "{}")} if row else None

    def device(self, spec: str) -> DeviceInfo | None:
        """A remembered device by id (``opencl:0:0``) or fingerprint key."""
        row = self.db.execute(DEVICE_INFO, (spec, spec)).fetchone()
        return DeviceInfo.from_dict(json.loads(row[0])) if row else None

    def measurements(self, problem: Problem) -> dict[Config, Measurement]:
        """What was measured before for exactly this problem: config -> measurement."""
        rows = self.db.query(f"SELECT * FROM {TABLE} WHERE " + " AND ".join(f"{c} = ?" for c in KEY[:-1]), problem.key)
        return {r.config: r.measurement for r in map(row_to_record, rows)}

    def history(self, problem: Problem) -> list[Record]:
        """Every record of one problem in the order its configs were first measured (a config
        measured again keeps its place)."""
        rows = self.db.query(f"SELECT * FROM {TABLE} WHERE " + " AND ".join(f"{c} = ?" for c in KEY[:-1]) + " ORDER BY id",
                             problem.key)
        return list(map(row_to_record, rows))

    def records(self, template: str | None = None, device: str | None = None, status: str | None = None) -> Iterator[Record]:
        """Stored records, filtered; ``device`` matches a fingerprint key or a name substring."""
        where, args = record_filter(template, device, status)
        sql = (f"SELECT * FROM {TABLE} WHERE {where} "
               "ORDER BY template, device_key, dtype, shape, status != 'ok', time_median")
        return map(row_to_record, self.db.query(sql, args))

    def count(self) -> int:
        return self.db[TABLE].count if TABLE in self.db.table_names() else 0

    def close(self) -> None:
        self.db.conn.close()
