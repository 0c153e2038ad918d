"""SQLite under the tuning database: the embedded default, a file beside the user (WAL, one writer
at a time, readers never waiting). What the store, the reader and the queue need to know of it, and
nothing else: how to connect, which errors are passing (busy, locked, a fresh schema raced) and
which mean a file older than the schema, the tables present, the migration, the import's staging
table, the scan settings. :mod:`.pg_engine` answers the same questions for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import sqlite3

from .schema import KEY, ROW_COLUMNS, STAGED, cannot_open, migrate, not_a_database

dialect = "sqlite"
#: the import's staging table, and the prefix of the database's own tables beside it
staged, main = STAGED, "main."
#: the staging table's order column; the LIMIT that means none; what a claim adds to lock its row
#: (nothing: BEGIN IMMEDIATE holds the whole file's write lock already)
seq, no_limit, skip_locked = "rowid", -1, ""
errors = (sqlite3.Error,)
read_errors = (sqlite3.DatabaseError,)


def connect(path, readonly: bool):
    """A connection to the file ``path``; a file that is not a tuning database is refused here."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False)
    why = not_a_database(path, (r[0] for r in conn.execute("SELECT name FROM sqlite_master")))
    if why:
        conn.close()
        raise cannot_open(path, why)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def describe(e: Exception) -> str:
    return str(e)


def transient(e: Exception) -> bool:
    """Another writer holds the lock beyond the busy timeout, or raced this one to a fresh schema."""
    return isinstance(e, (sqlite3.OperationalError, sqlite3.IntegrityError)) and any(
        s in str(e) for s in ("locked", "busy", "already exists", "UNIQUE constraint failed: meta"))


def missing(e: Exception) -> bool:
    """An error of a file older than this schema (a table or column it does not have yet)."""
    return any(w in str(e) for w in ("no such table", "no such column"))


def stream(conn, sql: str, args=()):
    return conn.execute(sql, args)


def tables(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def migrate_store(store) -> None:
    migrate(store.db, store.path)


@contextlib.contextmanager
def scanning(conn, cache_kib: int, mmap_bytes: int):
    """A larger page cache and a mapping of the file while the block runs (a long ordered scan visits
    table pages at random), the connection's own settings after it."""
    before = {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("cache_size", "mmap_size")}
    conn.execute(f"PRAGMA cache_size = {-int(cache_kib)}")
    conn.execute(f"PRAGMA mmap_size = {int(mmap_bytes)}")
    try:
        yield
    finally:
        for p, v in before.items():
            conn.execute(f"PRAGMA {p} = {int(v)}")


def create_staging(conn) -> None:
    """The import's staging table, in SQLite's temporary store: writing it takes no lock that other
    writers wait for."""
    name = STAGED.split(".")[1]
    conn.execute(f"CREATE TEMP TABLE {name} ({', '.join(ROW_COLUMNS)})")
    conn.execute(f"CREATE UNIQUE INDEX {STAGED}_key ON {name} ({', '.join(KEY)})")
    conn.execute("PRAGMA temp.cache_size = -65536")  # 64 MiB: a large import's index stays in memory


#: where an import's staging failed, for its error line
staging_place = "SQLite's temporary files"
staging_fix = "free space there (SQLITE_TMPDIR names the folder)"
