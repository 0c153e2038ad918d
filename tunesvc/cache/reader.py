"""The lookup's read-only view of a tuning database and of the shipped results: all of its SQL.

A :class:`Reader` opens its file ``mode=ro`` (it never creates, migrates or locks one) and answers
the few questions the lookup's fallback policy asks: the data version (to notice other processes'
writes), a remembered device, the devices of a type with records, the tuned shapes of a problem on
some devices, and their fastest configs at one shape. A file that no writer of this version has
migrated yet (without ``record_devices`` or ``record_shapes``) is read the slower way and answers
alike. :class:`Shipped` is the same view of the exports in ``tuning_db/``, loaded into memory once.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MissingDependencyError
from ..identity import VENDORS, normalise_vendor
from ..settings import ServerURL
from ..types import DeviceInfo, Fingerprint, Problem, parse_shape
from .schema import DATA_VERSION, DEVICE_COLUMNS, DEVICE_INFO, META, RECORD_DEVICES, RECORD_SHAPES, TABLE, not_a_database

if TYPE_CHECKING:  # the lookup stays light: Store (sqlite-utils) is imported only when shipped files load
    from .store import Store

_PROBLEM = "template = ? AND template_hash = ? AND dtype = ? AND status = 'ok' AND device_key = ?"
# The distinct shapes of one device, one index seek per shape (a loose index scan) instead of
# a walk over every config of every shape.
_SHAPES = (f"WITH RECURSIVE s(shape) AS (SELECT min(shape) FROM {TABLE} WHERE {_PROBLEM} UNION ALL "
           f"SELECT (SELECT min(shape) FROM {TABLE} WHERE {_PROBLEM} AND shape > s.shape) FROM s "
           "WHERE s.shape IS NOT NULL) SELECT shape FROM s WHERE shape IS NOT NULL")
# The same list from the record_shapes table (kept by the store's writes): one index range.
_SHAPE_LIST = (f"SELECT DISTINCT shape FROM {RECORD_SHAPES} WHERE template = ? AND template_hash = ? AND dtype = ? "
               "AND device_key IN ({keys})")
_BY_TIME = (f"SELECT config, time_median, gflops, device_key FROM {TABLE} WHERE template = ? AND template_hash = ? "
            "AND dtype = ? AND status = 'ok' AND device_key IN ({keys}) AND shape = ? ORDER BY time_median LIMIT ? OFFSET ?")
_MMAP = 1 << 30
_UNION_MAX = 64  # devices whose first configs are merged in one statement; beyond, one sort of them all
_FIRST = 8  # configs fetched first at a shape; the fastest is almost always valid
# Devices of one type whose vendor may normalise to the asked one: that vendor as written, or a spelling
# that is not a normalised name (a normalised name is its own normalisation, so any other one cannot
# match). Every row costs its strings; most files spell every vendor normalised, and so send no others.
# (A chain of != runs ~15% faster here than NOT IN.)
_SAME_KIND = f"device_type = ? AND (vendor = ? OR ({' AND '.join(['vendor != ?'] * len(VENDORS))}))"
_DEVICES = f"SELECT {', '.join(DEVICE_COLUMNS)} FROM {RECORD_DEVICES} WHERE {_SAME_KIND}"
_DEVICES_OLD = f"SELECT DISTINCT {', '.join(DEVICE_COLUMNS)} FROM {TABLE} WHERE {_SAME_KIND}"
_VENDOR = DEVICE_COLUMNS.index("vendor")


class Reader:
    """A read-only connection to one database file and the memo of answers given from it (a
    :class:`ServerReader` for a PostgreSQL server's database)."""

    #: what a failed read raises; the LIMIT that means none
    errors = (sqlite3.DatabaseError,)
    no_limit: int | None = -1

    def __new__(cls, path=None):
        return super().__new__(ServerReader if cls is Reader and isinstance(path, ServerURL) else cls)

    def __init__(self, path: Path):
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.memo: dict = {}  # the lookup's answers: ask -> (data version, answer)
        self.shapes: dict = {}  # (data version, problem, device keys) -> tuned shapes, for cold lookups
        self.last = None  # the data version read last
        self.problem: str | None = None  # why the file cannot be read, while it cannot
        self.tables = False  # whether the file has been seen with its measurements table

    @property
    def is_open(self) -> bool:
        """Whether there is anything to read (a file, a loaded folder)."""
        return self.conn is not None and self.problem is None

    def version(self):
        """The file's data version, which changes with every commit by any process; None without a file,
        or with one that cannot be read (``problem`` says why); -1 while it is busy."""
        self.problem = None
        if self.conn is None:
            if not self.path.exists():
                self.last = None
                return None
            if not self.path.is_file():
                return self._cannot("not a regular file")
            try:
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                self.conn.execute("PRAGMA busy_timeout = 1000")
                # a cold lookup touches a few pages anywhere in the file: mapped, they cost no read() each
                self.conn.execute(f"PRAGMA mmap_size = {_MMAP}")
            except sqlite3.Error as e:
                return self._cannot(str(e))
        try:
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
            if not self.tables or version != self.last:
                self._check_tables()
        except sqlite3.OperationalError as e:
            if not _busy(e):  # unable to open (permissions), disk I/O: said, never taken for "no records"
                return self._cannot(str(e))
            version = -1  # busy: nothing to answer from this time
        except sqlite3.DatabaseError as e:  # not a database at all, truncated
            return self._cannot(str(e))
        if self.problem:
            return None
        self.last = version
        return version

    def _check_tables(self) -> None:
        assert self.conn is not None  # checked just after connecting
        names = [r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        why = not_a_database(self.path, names)
        if why:
            self._cannot(why)
        self.tables = TABLE in names

    def _cannot(self, why: str):
        """Remember why the file cannot be read and forget the connection (the next lookup tries again)."""
        self.problem, self.last = why, None
        self.close()
        return None

    def _execute(self, sql: str, args) -> list:
        assert self.conn is not None  # _query asks only while open
        return self.conn.execute(sql, args).fetchall()

    def _query(self, sql: str, args) -> list:
        if not self.is_open:
            return []
        try:
            return self._execute(sql, args)
        except self.errors as e:
            if not self._missing(e):  # a damaged page, an I/O error: said, never taken for "no records"
                self._cannot(str(e))
            return []  # no such table yet (a file no writer of this version has migrated)

    @staticmethod
    def _missing(e: Exception) -> bool:
        return _missing(e)

    def device_info(self, spec: str) -> DeviceInfo | None:
        """A remembered device by id (``opencl:0:0``) or fingerprint key."""
        rows = self._query(DEVICE_INFO, (spec, spec))
        return DeviceInfo.from_dict(json.loads(rows[0][0])) if rows else None

    def devices(self, device_type: str, vendor: str) -> list[Fingerprint]:
        """Every device with records of this type and of a vendor that normalises to ``vendor`` (the only
        ones :func:`~tunesvc.identity.relation` can relate to a device of that type and vendor)."""
        if not self.is_open:
            return []
        args = (device_type, vendor, *VENDORS)
        try:
            rows = self._execute(_DEVICES, args)
        except self.errors as e:
            if not self._missing(e):
                self._cannot(str(e))
                return []
            rows = self._query(_DEVICES_OLD, args)  # a database no writer has migrated yet
        return [_fingerprint(row) for row in rows if row[_VENDOR] == vendor or normalise_vendor(row[_VENDOR]) == vendor]

    def tuned_shapes(self, problem: Problem, keys: list[str]) -> list[tuple[str, tuple[int, ...]]]:
        """(shape text, shape) of every shape with ok records of the problem's template version and dtype
        on these devices, as of the data version read last."""
        memo = (self.last, problem.template, problem.template_hash, problem.dtype, tuple(keys))
        hit = self.shapes.get(memo)
        if hit is None:
            if len(self.shapes) > 4096:
                self.shapes.clear()
            hit = self.shapes[memo] = [(text, _shape(text)) for (text,) in self._shape_rows(problem, keys)]
        return hit

    def _shape_rows(self, problem: Problem, keys: list[str]) -> list:
        """(shape,) of every tuned shape: one index range of record_shapes for all the devices."""
        if not self.is_open:
            return []
        args = (problem.template, problem.template_hash, problem.dtype)
        try:
            return self._execute(_SHAPE_LIST.format(keys=", ".join("?" * len(keys))), (*args, *keys))
        except self.errors as e:
            if not self._missing(e):
                self._cannot(str(e))
                return []
            # a file no writer of this version has migrated yet
            return list(dict.fromkeys(r for k in keys for r in self._query(_SHAPES, (*args, k) * 2)))

    def fastest(self, problem: Problem, keys: list[str], shape: str):
        """(config JSON, time, GFLOP/s, device key) of the ok records at ``shape`` on these devices,
        fastest first, in two helpings: the first few (one index range per device, merged in one
        statement, so several devices need no sort of all their records), then the rest."""
        args = (problem.template, problem.template_hash, problem.dtype)
        marks = ", ".join("?" * len(keys))
        if len(keys) == 1 or len(keys) > _UNION_MAX:  # SQLite allows 500 terms in a compound SELECT
            yield self._query(_BY_TIME.format(keys=marks), (*args, *keys, shape, _FIRST, 0))
        else:
            one = f"SELECT * FROM ({_BY_TIME.format(keys='?')}) AS first"
            sql = " UNION ALL ".join([one] * len(keys)) + f" ORDER BY 2 LIMIT {_FIRST}"
            yield self._query(sql, [a for key in keys for a in (*args, key, shape, _FIRST, 0)])
        yield self._query(_BY_TIME.format(keys=marks), (*args, *keys, shape, self.no_limit, _FIRST))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _busy(e: sqlite3.Error) -> bool:
    return any(w in str(e) for w in ("locked", "busy"))


def _missing(e: Exception) -> bool:
    """An error of a file older than this schema (a table or column it does not have yet)."""
    return any(w in str(e) for w in ("no such table", "no such column"))


_shape = functools.lru_cache(maxsize=65536)(parse_shape)  # a pure function of the few shapes a file holds


_fingerprints: dict[str, Fingerprint] = {}  # device key -> its fingerprint: every cold lookup reads the same few


def _fingerprint(row: tuple) -> Fingerprint:
    """The fingerprint of a record_devices row: its hardware columns, and the driver, the rest of its key
    (the key is the columns joined, so it alone names the row)."""
    fp = _fingerprints.get(row[0])
    if fp is None:
        if len(_fingerprints) > 65536:
            _fingerprints.clear()
        key, *hardware = row
        # the hardware columns, then the driver: mypy cannot count a starred list
        fp = _fingerprints[key] = Fingerprint(*hardware, key[len("|".join(hardware)) + 1:])  # type: ignore[call-arg]
    return fp


class ServerReader(Reader):
    """The lookup's view of a tuning database on a PostgreSQL server: the same questions over a
    read-only autocommit session. Its data version is the counter every write to the tables a lookup
    reads bumps (triggers of :func:`.schema.migrate_pg`): one round trip per warm lookup."""

    no_limit = None

    @property
    def errors(self):
        from . import pg_engine

        return pg_engine.errors

    @staticmethod
    def _missing(e: Exception) -> bool:
        return getattr(e, "sqlstate", None) in ("42P01", "42703")

    def version(self):
        """The database's data version; None (``problem`` says why) when it cannot be read."""
        from . import pg_engine

        self.problem = None
        if self.conn is None:
            try:
                conn = pg_engine.try_connect(self.path, readonly=True)
            except MissingDependencyError as e:
                return self._cannot(str(e))
            if isinstance(conn, str):
                return self._cannot(conn)
            self.conn = conn
        try:
            row = self.conn.execute(f"SELECT value FROM {META} WHERE key = '{DATA_VERSION}'").fetchone()
            version = int(row[0]) if row else time.monotonic_ns()  # no counter yet: nothing is remembered
            if not self.tables or version != self.last:
                self._check_tables()
        except self.errors as e:
            if not self._missing(e):  # the server went away, a permission: said, never taken for "no records"
                return self._cannot(pg_engine.describe(e))
            version = time.monotonic_ns()  # an empty database: no tables yet
        if self.problem:
            return None
        self.last = version
        return version

    def _check_tables(self) -> None:
        from . import pg_engine

        names = pg_engine.tables(self.conn)
        why = not_a_database(self.path, names - pg_engine.OPTUNA_TABLES)
        if why:
            self._cannot(why.replace("an SQLite database", "a PostgreSQL database"))
        self.tables = TABLE in names

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # a connection the server dropped closes anyway
                pass
            self.conn = None


class Shipped(Reader):
    """The exports in a ``tuning_db/`` folder, loaded once into memory through the validated import."""

    def __init__(self, folder: Path):
        super().__init__(folder)
        self.store: Store | None = None
        self.loaded = False
        self.problems: list[str] = []  # files that could not be read, for explain

    @property
    def is_open(self) -> bool:
        return self.store is not None

    def version(self):
        self.last = 0  # loaded once, never written
        if not self.loaded:
            self.loaded = True
            files = sorted(self.path.glob("*.jsonl")) + sorted(self.path.glob("*.jsonl.gz")) if self.path.is_dir() else []
            if files:
                self.store = self._load(files)
        return 0

    def _load(self, files):
        from ..errors import ImportFileError
        from .exchange import import_files
        from .store import MEMORY, Store

        store = Store(MEMORY)
        for f in files:  # one broken file must not hide the others, nor break a lookup
            try:
                import_files([f], store)
            except ImportFileError as e:
                self.problems.append(f"shipped file skipped: {e}")
        return store

    def _execute(self, sql: str, args) -> list:
        assert self.store is not None  # _query asks only while loaded
        return self.store.read(sql, args).fetchall()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
