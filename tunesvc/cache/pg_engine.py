"""PostgreSQL under the tuning database: one server's database shared by many machines.

The same questions :mod:`.sqlite_engine` answers, for psycopg 3 (``pip install 'tunesvc[postgres]'``,
imported only when a ``postgresql://`` database is opened). The store, the reader and the queue
write their SQL once, in SQLite's spelling where both engines take it (``INSERT ... ON CONFLICT``,
``RETURNING``, window functions); :class:`Connection` gives a psycopg connection the few sqlite3
manners they use and translates the little that differs: ``?`` placeholders, ``BEGIN IMMEDIATE``
(a plain BEGIN: row locks do the rest), ``LIKE`` (SQLite's ignores ASCII case) and the two-argument
scalar ``max``/``min`` (``greatest``/``least``). Tables are made by :func:`.schema.migrate_pg`.
"""

from __future__ import annotations

import contextlib
import functools
import re

from ..errors import MissingDependencyError
from .schema import cannot_open, migrate_pg, not_a_database, pg_staging, pg_tables

dialect = "postgresql"
staged, main = "pg_temp.import_staged", ""
#: a claim locks the one row it takes and passes over rows other workers' claims hold
seq, no_limit, skip_locked = "seq", None, " FOR UPDATE SKIP LOCKED"
CONNECT_TIMEOUT = 10  # seconds: an unreachable host is said in one line, not waited on for minutes
#: Optuna's tables (RDB storage): a tune keeps its search in the same database as its measurements,
#: so a database holding only these is a tuning database without records yet
OPTUNA_TABLES = frozenset(("studies", "study_directions", "study_system_attributes", "study_user_attributes",
                           "trial_heartbeats", "trial_intermediate_values", "trial_params", "trial_system_attributes",
                           "trial_user_attributes", "trial_values", "trials", "version_info", "alembic_version"))


def driver():
    """psycopg 3, or MissingDependencyError saying how to install it."""
    try:
        import psycopg
    except ImportError:
        raise MissingDependencyError("--db postgresql://... needs the PostgreSQL driver psycopg 3: "
                                     "pip install 'tunesvc[postgres]'") from None
    return psycopg


def __getattr__(name: str):
    # psycopg's base error, resolved when first asked for: psycopg is imported only with a server database
    if name in ("errors", "read_errors"):
        return (driver().Error,)
    raise AttributeError(name)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """SQLite-spelled SQL of the store, the reader and the queue in PostgreSQL's spelling."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    if sql.startswith("BEGIN"):
        return "BEGIN"
    sql = re.sub(r"\b(max|min)\(([^(),]+),([^(),]+)\)", lambda m: f"{'greatest' if m[1] == 'max' else 'least'}({m[2]},{m[3]})", sql)
    return re.sub(r"\bLIKE\b", "ILIKE", sql)


def _text(args) -> tuple:
    """Arguments PostgreSQL's text takes: a NUL (a driver's log may hold one; SQLite stores it)
    becomes U+FFFD, where the server would refuse the whole write."""
    return tuple(a.replace("\x00", "\ufffd") if type(a) is str and "\x00" in a else a for a in args)


class Connection:
    """A psycopg connection (autocommit: a read holds no transaction open) with sqlite3's manners:
    ``execute`` and ``executemany`` on the connection, ``with conn:`` as one transaction,
    ``commit``/``rollback``/``in_transaction``."""

    def __init__(self, raw):
        self.raw = raw

    def execute(self, sql: str, args=()):
        cur = self.raw.cursor()
        cur.execute(translate(sql), _text(args))
        return cur

    def executemany(self, sql: str, rows):
        cur = self.raw.cursor()
        cur.executemany(translate(sql), [_text(r) for r in rows])
        return cur

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != driver().pq.TransactionStatus.IDLE

    def commit(self) -> None:
        if self.in_transaction:
            self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction and not self.raw.closed:
            self.raw.execute("ROLLBACK")

    def __enter__(self):
        if not self.in_transaction:
            self.raw.execute("BEGIN")
        return self

    def __exit__(self, kind, *_):
        if kind is None:
            self.commit()
        else:
            self.rollback()
        return False

    def close(self) -> None:
        self.raw.close()


def conninfo(url: str) -> str:
    """The URL as libpq takes it (``postgresql+psycopg://`` is SQLAlchemy's spelling)."""
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if scheme.split("+")[0].lower() in ("postgresql", "postgres") else url


def describe(e: Exception) -> str:
    """A driver's error in one line (libpq's run over several, with tabs)."""
    return " ".join(str(e).split()) or type(e).__name__


def connect(path, readonly: bool) -> Connection:
    """A connection to the database ``path`` (a settings.ServerURL) names; read-only sessions refuse
    every write. A database with other tables and no measurements table is refused here."""
    conn = try_connect(path, readonly)
    if isinstance(conn, str):
        raise cannot_open(path, conn)
    return conn


def try_connect(path, readonly: bool) -> "Connection | str":
    """:func:`connect`'s connection, or why there is none (the lookup's reader says it, never raises)."""
    psycopg = driver()
    try:
        raw = psycopg.connect(conninfo(path.url), autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                              application_name="tunesvc")
    except psycopg.Error as e:
        return describe(e)
    conn = Connection(raw)
    try:
        if readonly:
            raw.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        why = not_a_database(path, pg_tables(conn) - OPTUNA_TABLES)
    except psycopg.Error as e:
        why = describe(e)
    if why:
        raw.close()
        return why.replace("an SQLite database", "a PostgreSQL database")
    return conn


def transient(e: Exception) -> bool:
    """Two transactions in each other's way (a deadlock, a serialisation failure): the one that lost
    is retried."""
    return getattr(e, "sqlstate", None) in ("40001", "40P01", "55P03")


def missing(e: Exception) -> bool:
    """A table or column this database does not have yet (no writer of this version migrated it)."""
    return getattr(e, "sqlstate", None) in ("42P01", "42703")


def stream(conn, sql: str, args=()):
    """Rows of a long query as the server sends them, a few thousand at a time (libpq 17's chunked
    mode, 2.6x faster than a row at a time; single rows with an older libpq), never all at once."""
    cur = conn.raw.cursor()
    if driver().pq.version() >= 170000:
        return cur.stream(translate(sql), _text(args), size=2000)
    return cur.stream(translate(sql), _text(args))


def tables(conn) -> set[str]:
    return pg_tables(conn)


def migrate_store(store) -> None:
    with store.conn:
        migrate_pg(store.conn, store.path)


@contextlib.contextmanager
def scanning(conn, cache_kib: int, mmap_bytes: int):
    """The server keeps its own caches: nothing to set for a long scan."""
    yield


def create_staging(conn) -> None:
    """The import's staging table: a temporary table of this session on the server."""
    for ddl in pg_staging(staged.split(".")[1]):
        conn.execute(ddl)


staging_place = "a temporary table on the PostgreSQL server"
staging_fix = "check the server's free space"
