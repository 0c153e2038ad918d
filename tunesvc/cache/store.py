"""The tuning database: every measured config, in an SQLite file (the default) or a PostgreSQL
server's database. The only writer.

One row per (device, template, template source hash, dtype, shape, config):
named columns, the config as canonical JSON (never positional, never pickle),
WAL so readers never wait on a writer, one transaction per write. The schema and
the row <-> record conversion are :mod:`.schema`'s; what differs between the engines is
:mod:`.sqlite_engine`'s and :mod:`.pg_engine`'s; the lookup reads through :mod:`.reader`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import time
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Iterator

import sqlite_utils

from ..errors import MissingDependencyError, StoreError
from ..settings import ServerURL, db_path
from ..types import Config, DeviceInfo, Measurement, Problem, Record
# SCHEMA_VERSION and the table names stay importable from here, where they were (benchmarks/db_scale.py)
from .schema import (CEILINGS, DEVICE_COLUMNS, DEVICE_INFO, DEVICES, KEY, RECORD_DEVICES, RECORD_SHAPES,  # noqa: F401
                     ROW_COLUMNS, SCHEMA_VERSION, SHAPE_COLUMNS, STAGED, TABLE, cannot_open, migrate, not_a_database,  # noqa: F401
                     now_iso, record_filter, record_to_row, row_to_record)
from . import sqlite_engine

#: the path of a store that lives in memory only (the shipped results, loaded once per process)
MEMORY = ":memory:"


def _read(method):
    """A read of the store whose failure (a damaged file) is a one-line StoreError (see Store.reading)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.reading():
            return method(self, *args, **kwargs)

    return wrapper


def engine_of(path):
    """The engine module of a database: :mod:`.pg_engine` for a server's URL, else :mod:`.sqlite_engine`."""
    from . import pg_engine, sqlite_engine

    return pg_engine if isinstance(path, ServerURL) else sqlite_engine


class Store:
    """A tuning database: a file (SQLite, the default) or a PostgreSQL server's database
    (``postgresql://user@host/db``). Open it with a path or URL, or None for the default location
    (:func:`tunesvc.settings.db_path`)."""

    def __init__(self, path: str | Path | None = None, readonly: bool = False):
        self.path = Path(MEMORY) if str(path) == MEMORY else db_path(path)
        self.readonly = readonly
        self.engine = engine_of(self.path)
        self.staged = self.engine.staged
        self.db = None  # SQLite's sqlite-utils Database (its tests and benchmarks reach in); None on PostgreSQL
        try:
            if self.engine is sqlite_engine and str(self.path) != MEMORY:
                self._check_file()
            self.conn = self.engine.connect(self.path, readonly)
            if self.engine is sqlite_engine:
                self.db = sqlite_utils.Database(self.conn)
            if not readonly:
                self._retrying(lambda: self.engine.migrate_store(self))
        except (StoreError, MissingDependencyError):
            self._close_quietly()
            raise
        except self.engine.errors as e:
            self._close_quietly()
            raise cannot_open(self.path, self.engine.describe(e)) from None
        except OSError as e:
            raise cannot_open(self.path, e.strerror or e) from None

    def _close_quietly(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _check_file(self) -> None:
        """Refuse what is not a regular file (a device node, a directory): SQLite would read /dev/null
        as an empty database and write over /dev/full; a read-only store needs the file to exist."""
        assert isinstance(self.path, Path), "only a SQLite store has a file"
        exists = self.path.exists()
        if exists and not self.path.is_file():
            raise cannot_open(self.path, "not a regular file")
        if self.readonly and not exists:
            raise StoreError(f"tuning database {str(self.path)!r} does not exist; tune something first or pass --db")
        if not self.readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    # ---- writes -------------------------------------------------------------------------
    def put(self, record: Record) -> None:
        """Insert or replace one measurement, in its own transaction."""
        self.put_many([record])

    def put_many(self, records: Iterable[Record]) -> int:
        """Insert or replace measurements, in one transaction; how many."""
        rows = [record_to_row(r) for r in records]

        self._write(lambda: self.upsert_rows(rows))
        return len(rows)

    def upsert_rows(self, rows: list[dict]) -> None:
        """Insert or replace schema rows (column -> value, as :func:`.schema.record_to_row` or the import's
        validation makes them), and the devices and shapes they add, inside the caller's transaction."""
        if not rows:
            return
        cols = list(rows[0])
        conn = self.conn
        conn.executemany(_upsert_sql(TABLE, tuple(cols), KEY), map(itemgetter(*cols), rows))
        devices = sorted(set(map(itemgetter(*DEVICE_COLUMNS), rows)))  # sorted: concurrent writers lock rows in one order
        conn.executemany(f"INSERT INTO {RECORD_DEVICES} VALUES ({', '.join('?' * len(DEVICE_COLUMNS))}) ON CONFLICT DO NOTHING",
                         devices)
        shapes = sorted(set(map(itemgetter(*SHAPE_COLUMNS), (r for r in rows if r["status"] == "ok"))))
        conn.executemany(f"INSERT INTO {RECORD_SHAPES} VALUES ({', '.join('?' * len(SHAPE_COLUMNS))}) ON CONFLICT DO NOTHING",
                         shapes)

    def put_device(self, info: DeviceInfo) -> None:
        """Remember a device's description, so later lookups by id need no driver."""
        row = {"device_key": info.fingerprint.key, "id": info.id, "info": json.dumps(info.to_dict(), sort_keys=True),
               "updated_at": now_iso()}
        self._write(lambda: self.conn.execute(_upsert_sql(DEVICES, tuple(row), ("device_key",)), tuple(row.values())))

    def put_ceilings(self, device_key: str, gbps: float, gflops: float, measured_at: str, details: dict) -> None:
        """Store a device's measured roofline ceilings, replacing older ones."""
        row = {"device_key": device_key, "gbps": gbps, "gflops": gflops, "details": json.dumps(details, sort_keys=True),
               "measured_at": measured_at}
        self._write(lambda: self.conn.execute(_upsert_sql(CEILINGS, tuple(row), ("device_key",)), tuple(row.values())))

    def staging(self) -> "Staging":
        """A place for the rows an import accepts, outside the database's tables (see :class:`Staging`)."""
        return Staging(self)

    def _write(self, change) -> None:
        """Run ``change`` in its own transaction, retried while another writer holds the lock."""

        def write():
            with self.conn:
                change()

        try:
            self._retrying(write)
        except self.engine.errors as e:
            raise self._write_error(e) from None

    def _retrying(self, write, attempts: int = 8):
        """Run ``write``; retry it while other processes hold the lock beyond the busy timeout, race
        this one to create the same fresh schema (each step re-checks what exists), or deadlock it."""
        for attempt in range(attempts):
            try:
                return write()
            except self.engine.errors as e:
                if not self.engine.transient(e) or attempt == attempts - 1:
                    raise
                if self.conn.in_transaction:
                    self.conn.rollback()
                time.sleep(0.05 * 2**attempt)

    def _write_error(self, e: Exception) -> StoreError:
        return StoreError(f"cannot write to tuning database {str(self.path)!r}: {self.engine.describe(e)}; check that it "
                          "is a writable tuning database, or pass another --db")

    # ---- reads --------------------------------------------------------------------------
    def read(self, sql: str, args=()):
        """The rows of one query (built from :mod:`.schema`'s names), for the export and the merge: a cursor."""
        return self.conn.execute(sql, args)

    def stream(self, sql: str, args=()):
        """The rows of one long query, fetched as they are read (the export's): SQLite's cursor steps
        through the file; on a server, rows come in batches instead of the whole result at once."""
        return self.engine.stream(self.conn, sql, args)

    def table_names(self) -> set[str]:
        """The tables the database has."""
        return self.engine.tables(self.conn)

    @contextlib.contextmanager
    def scanning(self, cache_kib: int, mmap_bytes: int):
        """A larger page cache and a mapping of the file while the block runs (a long ordered scan visits
        table pages at random), the connection's own settings after it (SQLite's; a server keeps its own)."""
        with self.engine.scanning(self.conn, cache_kib, mmap_bytes):
            yield self

    def _rows(self, sql: str, args=()) -> Iterator[dict]:
        """The rows of one query as column -> value."""
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row))

    @_read
    def ceilings(self, device_key: str) -> dict | None:
        """A device's stored roofline ceilings (gbps, gflops, measured_at, details), or None."""
        if CEILINGS not in self.table_names():  # a read-only store of an older file
            return None
        row = self.read(f"SELECT gbps, gflops, measured_at, details FROM {CEILINGS} WHERE device_key = ?", (device_key,)).fetchone()
        return {"gbps": row[0], "gflops": row[1], "measured_at": row[2], "details": json.loads(row[3] or "{}")} if row else None

    @_read
    def device(self, spec: str) -> DeviceInfo | None:
        """A remembered device by id (``opencl:0:0``) or fingerprint key."""
        if DEVICES not in self.table_names():
            return None
        row = self.read(DEVICE_INFO, (spec, spec)).fetchone()
        return DeviceInfo.from_dict(json.loads(row[0])) if row else None

    @_read
    def measurements(self, problem: Problem) -> dict[Config, Measurement]:
        """What was measured before for exactly this problem: config -> measurement."""
        rows = self._rows(f"SELECT * FROM {TABLE} WHERE " + " AND ".join(f"{c} = ?" for c in KEY[:-1]), problem.key)
        return {r.config: r.measurement for r in map(row_to_record, rows)}

    @_read
    def history(self, problem: Problem) -> list[Record]:
        """Every record of one problem in the order its configs were first measured (a config
        measured again keeps its place)."""
        rows = self._rows(f"SELECT * FROM {TABLE} WHERE " + " AND ".join(f"{c} = ?" for c in KEY[:-1]) + " ORDER BY id",
                          problem.key)
        return list(map(row_to_record, rows))

    def records(self, template: str | None = None, device: str | None = None, status: str | None = None) -> Iterator[Record]:
        """Stored records, filtered; ``device`` matches a fingerprint key or a name substring. A file that
        cannot be read to the end (truncated, damaged) raises StoreError, whenever it shows."""
        where, args = record_filter(template, device, status)
        sql = (f"SELECT * FROM {TABLE} WHERE {where} "
               "ORDER BY template, device_key, dtype, shape, status != 'ok', time_median")
        with self.reading():
            if TABLE not in self.table_names():  # an empty database opened read-only: no records yet
                return
            rows = self._rows(sql, args)
            for row in rows:
                yield row_to_record(row)

    @contextlib.contextmanager
    def reading(self):
        """Reads in the block that fail (a damaged file, a lost server, a row no writer of tunesvc wrote)
        raise StoreError."""
        try:
            yield self
        except self.engine.read_errors as e:
            raise StoreError(f"cannot read tuning database {str(self.path)!r}: {self.engine.describe(e)}; "
                             + ("it may be truncated or damaged: pass another file with --db" if self.engine is sqlite_engine
                                else "check the server, or pass another --db")) from None
        except (ValueError, TypeError, KeyError) as e:
            raise StoreError(f"tuning database {str(self.path)!r} holds a row that is not a tunesvc record "
                             f"({type(e).__name__}: {str(e)[:80]}); pass another --db") from None

    @_read
    def count(self) -> int:
        return self.read(f"SELECT count(*) FROM {TABLE}").fetchone()[0] if TABLE in self.table_names() else 0

    def close(self) -> None:
        self.conn.close()


@functools.lru_cache(maxsize=64)
def _upsert_sql(table: str, cols: tuple, key: tuple) -> str:
    """INSERT ... ON CONFLICT (key) DO UPDATE: one statement both engines take."""
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key))


class Staging:
    """The rows an import has accepted, held in a table of the importing connection's own, in SQLite's
    temporary store: writing it takes no lock that other writers wait for, and what the import read
    (every file, to its end) is checked before the database file changes at all. :meth:`merge` then
    writes them in short transactions. Use it as a context manager: the table goes at the end."""

    #: seconds one merge transaction may hold the write lock, and the pause after it: SQLite's busy
    #: handler polls every 100 ms at most, so a writer waiting meanwhile finds the lock free
    HOLD, PAUSE = 0.25, 0.1

    def __init__(self, store: Store):
        self.store, self.conn, self.engine = store, store.conn, store.engine
        self.staged = store.staged
        cols, marks = ", ".join(ROW_COLUMNS), ", ".join("?" * len(ROW_COLUMNS))
        self.engine.create_staging(self.conn)
        self.insert = (f"INSERT INTO {self.staged} ({cols}) VALUES ({marks}) ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
                       + ", ".join(f"{c} = excluded.{c}" for c in ROW_COLUMNS if c not in KEY))
        self.rows = itemgetter(*ROW_COLUMNS)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if self.conn.in_transaction:
                self.conn.rollback()
            self.conn.execute(f"DROP TABLE IF EXISTS {self.staged}")
        except self.engine.errors:  # the table goes with the connection anyway; the error that got here matters
            pass
        return False

    def add(self, rows: list[dict]) -> None:
        """Stage rows (a later row of a staged key replaces it), in a transaction of the temporary store."""
        try:
            with self.conn:
                self.conn.executemany(self.insert, map(self.rows, rows))
        except self.engine.errors as e:
            raise StoreError(f"cannot stage the import in {self.engine.staging_place}: {self.engine.describe(e)}; "
                             f"{self.engine.staging_fix}; nothing was imported") from None

    def merge(self, guard: str | None, new_rows: int) -> int:
        """Write every staged row into the database: ``INSERT ... ON CONFLICT DO UPDATE WHERE guard``
        (None: always replace), the guard checked again against the row stored at that moment. A few
        thousand rows a transaction, sized to hold the lock about HOLD seconds; how many were staged."""
        total = self.conn.execute(f"SELECT max({self.engine.seq}) FROM {self.staged}").fetchone()[0] or 0
        if not total:
            return 0
        self._check_space(new_rows)
        sql = self._merge_sql(guard)
        done, size = 0, 2000
        while done < total:
            started = time.perf_counter()
            try:
                self.store._retrying(lambda: self._merge_batch(sql, done, done + size))
            except self.engine.errors as e:
                raise self._merge_error(e, done, total) from None
            done += size
            size = min(200_000, max(500, int(size * self.HOLD / max(time.perf_counter() - started, 1e-3))))
            if done < total and str(self.store.path) != MEMORY:
                time.sleep(self.PAUSE)
        return total

    def _merge_sql(self, guard: str | None) -> tuple[str, ...]:
        cols, main, seq = ", ".join(ROW_COLUMNS), self.engine.main, self.engine.seq
        update = ("DO NOTHING" if guard == "nothing" else "DO UPDATE SET "
                  + ", ".join(f"{c} = excluded.{c}" for c in ROW_COLUMNS if c not in KEY)
                  + (f" WHERE {guard}" if guard else ""))
        rows = f"FROM {self.staged} WHERE {seq} > ? AND {seq} <= ?"
        return (f"INSERT INTO {main}{TABLE} ({cols}) SELECT {cols} {rows} ORDER BY {seq} ON CONFLICT ({', '.join(KEY)}) {update}",
                f"INSERT INTO {main}{RECORD_DEVICES} SELECT DISTINCT {', '.join(DEVICE_COLUMNS)} {rows} ON CONFLICT DO NOTHING",
                f"INSERT INTO {main}{RECORD_SHAPES} SELECT DISTINCT {', '.join(SHAPE_COLUMNS)} {rows} AND status = 'ok' "
                "ON CONFLICT DO NOTHING")

    def _merge_batch(self, sql: tuple[str, ...], low: int, high: int) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql:
                self.conn.execute(statement, (low, high))
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def _check_space(self, new_rows: int) -> None:
        """Refuse before writing where the file system has clearly too little room for the new rows
        (about 800 bytes each with their indexes, and as much again in the write-ahead log)."""
        if str(self.store.path) == MEMORY or self.engine is not sqlite_engine:  # a server minds its own disk
            return
        assert isinstance(self.store.path, Path), "a SQLite store is a file"
        need = new_rows * 1600 + (4 << 20)
        free = shutil.disk_usage(self.store.path.parent).free
        if free < need:
            raise StoreError(f"the import needs about {need >> 20} MiB free beside {str(self.store.path)!r}, and "
                             f"{free >> 20} MiB are; free some space: nothing was imported")

    def _merge_error(self, e: Exception, done: int, total: int) -> StoreError:
        error = self.store._write_error(e)
        if done:
            return StoreError(f"{error} ({done} of the {total} accepted records were written before it; importing "
                              "the same files again adds the rest and skips those)")
        return StoreError(f"{error} (nothing was imported)")
