"""The tuning database's schema, in one place: tables, columns, key, indexes, migrations, and the one
conversion between a stored row and a :class:`~tunesvc.types.Record`.

Every other module names columns through the groups below (``DEVICE``, ``PROBLEM``, ``MEASURED``,
...), never by position nor by a list of its own, so a column added here reaches the store, the
reader, the export and the import alike. Nothing here imports sqlite-utils: :func:`migrate` is handed
the store's database, and the lookup's reader imports this module without it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .._version import __version__
from ..errors import StoreError
from ..types import Config, Fingerprint, Measurement, Record, Timing, parse_shape, shape_str

SCHEMA_VERSION = 1
TABLE = "measurements"
RECORD_DEVICES = "record_devices"
RECORD_SHAPES = "record_shapes"
DEVICES = "devices"
META = "meta"
CEILINGS = "ceilings"
JOBS = "jobs"
DEMAND = "demand"

# ---- column groups -----------------------------------------------------------------------
#: a Fingerprint's layers, in its order (``name`` is stored as ``device_name``)
DEVICE = ("backend", "vendor", "device_type", "architecture", "device_name", "driver")
#: a problem less its device
PROBLEM = ("template", "template_hash", "dtype", "shape")
#: a Measurement less its config: outcome, times, rates
MEASURED = ("status", "reason", "time_median", "time_min", "time_max", "time_iqr", "runs", "gflops", "gbps",
            "compile_seconds")  # fmt: skip
#: the times an ok record must have
TIMES = ("time_median", "time_min", "time_max")
#: where a record comes from
PROVENANCE = ("created_at", "tunesvc_version", "source")

#: a record's identity: one row per (device, template version, dtype, shape, config)
KEY = ("device_key", *PROBLEM, "config")
#: the lookup's path: problem, then device, then shapes and their fastest configs, from the index alone
LOOKUP_INDEX = ("template", "template_hash", "dtype", "status", "device_key", "shape", "time_median")
#: the measurements table, in its column order
COLUMNS = {c: {"id": int, "runs": int, "schema_version": int}.get(c, float if c in MEASURED[2:] else str)
           for c in ("id", "device_key", *DEVICE, *PROBLEM, "config", *MEASURED, "schema_version", "tunesvc_version",
                     "created_at", "source")}  # fmt: skip
NOT_NULL = ("device_key", *PROBLEM, "config", "status")
#: the columns a written row gives (all but the row id), in the table's order
ROW_COLUMNS = tuple(c for c in COLUMNS if c != "id")
#: the rows an import has accepted and not yet merged: a table of the importing connection's own,
#: in SQLite's temporary store (writing it takes no lock on the database file)
STAGED = "temp.import_staged"
#: the fields of one export line, in their order (the config is written last)
EXPORT_FIELDS = (*PROBLEM, *DEVICE, "config", *MEASURED, *PROVENANCE)
#: every device with records (its driver is the rest of its key)
DEVICE_COLUMNS = ("device_key", *DEVICE[:-1])
#: every shape with an ok record, per problem and device
SHAPE_COLUMNS = ("template", "template_hash", "dtype", "device_key", "shape")

#: a remembered device by id or fingerprint key, the newest first
DEVICE_INFO = f"SELECT info FROM {DEVICES} WHERE device_key = ? OR id = ? ORDER BY updated_at DESC LIMIT 1"


def record_filter(template: str | None = None, device: str | None = None, status: str | None = None) -> tuple[str, list]:
    """(SQL condition, arguments) of the records a user picks: a template, a device (its fingerprint
    key or a substring of its name), a status; ``1`` when none is given."""
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
    return " AND ".join(where) or "1 = 1", args


def cannot_open(path, error) -> StoreError:
    """The one-line error of a file (or a server's database) that is not a readable tuning database."""
    if not hasattr(path, "parent"):  # a settings.ServerURL: str() of it has no password
        return StoreError(f"cannot open tuning database {str(path)!r}: {error}; check the server, the user and the "
                          "password in the URL, or pass another --db")
    return StoreError(f"cannot open tuning database {str(path)!r}: {error}; pass another file with --db")


def newer_schema(path, version) -> StoreError | None:
    """The error of a database a newer tunesvc wrote (a schema version above this one's), else None."""
    try:
        newer = int(version) > SCHEMA_VERSION
    except (TypeError, ValueError):
        newer = True
    if not newer:
        return None
    return StoreError(f"tuning database {str(path)!r} has schema version {str(version)[:20]}, newer than this "
                      f"tunesvc {__version__} reads ({SCHEMA_VERSION}): upgrade tunesvc; nothing was changed")


def not_a_database(path, tables) -> str | None:
    """Why a file SQLite opened is not a tuning database, or None: it has other tables and no
    measurements table (an empty file, or one whose first writer has not made its tables yet, is a
    database without records)."""
    names = set(tables)
    if names and TABLE not in names:
        return "it is an SQLite database, but not a tuning database (no measurements table)"
    return None


# ---- rows and records --------------------------------------------------------------------
def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_to_row(r: Record) -> dict:
    """The row that stores a record (column -> value)."""
    m, fp, t = r.measurement, r.fingerprint, r.measurement.timing
    return {
        "device_key": fp.key, **dict(zip(DEVICE, (fp.backend, fp.vendor, fp.device_type, fp.architecture, fp.name, fp.driver))),
        "template": r.template, "template_hash": r.template_hash, "dtype": r.dtype, "shape": shape_str(r.shape),
        "config": m.config.key, "status": m.status, "reason": m.reason,
        "time_median": t.median if t else None, "time_min": t.min if t else None, "time_max": t.max if t else None,
        "time_iqr": t.iqr if t else None, "runs": t.count if t else 0,
        "gflops": m.gflops, "gbps": m.gbps, "compile_seconds": m.compile_seconds,
        "schema_version": SCHEMA_VERSION, "tunesvc_version": r.tunesvc_version or __version__,
        "created_at": r.created_at or now_iso(), "source": r.source,
    }


def row_to_record(row) -> Record:
    """The record a stored row (a mapping of column -> value) holds."""
    timing = None
    if row["time_median"] is not None:
        timing = Timing(row["time_median"], row["time_min"], row["time_max"], row["time_iqr"] or 0.0, row["runs"] or 0)
    m = Measurement(Config.from_json(row["config"]), row["status"], row["reason"] or "", timing, row["gflops"],
                    row["gbps"], row["compile_seconds"] or 0.0)
    fp = Fingerprint(*(row[c] for c in DEVICE))
    return Record(fp, row["template"], row["template_hash"], row["dtype"], parse_shape(row["shape"]), m,
                  row["created_at"], row["tunesvc_version"], row["source"])


# ---- migrations --------------------------------------------------------------------------
def migrate(db, path="the database") -> None:
    """Bring a sqlite-utils ``Database`` to this schema, in one transaction, keeping every row: create
    what is missing, add columns later versions added. Each step checks what exists, so two
    processes creating one fresh file can both run it (the store retries the one that loses)."""
    if META in db.table_names():
        row = db.execute(f"SELECT value FROM {META} WHERE key = 'schema_version'").fetchone()
        error = newer_schema(path, row[0]) if row else None
        if error:
            raise error
    if db.journal_mode != "wal":
        db.enable_wal()
    with db.conn:
        if TABLE not in db.table_names():
            db[TABLE].create(COLUMNS, pk="id", not_null=set(NOT_NULL))
            db[TABLE].create_index(KEY, unique=True, if_not_exists=True)
            db[TABLE].create_index(("template", "dtype", "status", "device_key"), if_not_exists=True)
        else:
            have = set(db[TABLE].columns_dict)
            for name, kind in COLUMNS.items():
                if name not in have:
                    db[TABLE].add_column(name, kind)
        db[TABLE].create_index(LOOKUP_INDEX, index_name="measurements_lookup", if_not_exists=True)
        if RECORD_DEVICES not in db.table_names():
            _create_record_devices(db)
        if RECORD_SHAPES not in db.table_names():
            _create_record_shapes(db)
        db.execute(f"DROP TRIGGER IF EXISTS {RECORD_DEVICES}_add")  # kept the table by trigger before 0.1.0 shipped
        if DEVICES not in db.table_names():
            db[DEVICES].create({"device_key": str, "id": str, "info": str, "updated_at": str}, pk="device_key")
            db[DEVICES].create_index(("id",), if_not_exists=True)
        if META not in db.table_names():
            db[META].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
        if CEILINGS not in db.table_names():  # roofline ceilings, one row per device (tunesvc.measure.roofline)
            db[CEILINGS].create({"device_key": str, "gbps": float, "gflops": float, "details": str, "measured_at": str},
                                pk="device_key")


def _create_record_devices(db) -> None:
    """Every device that has records: the lookup's fallback levels pick related devices from it
    without scanning the records. The store's writes keep it current (a trigger did too, at twice
    the cost of an insert)."""
    db[RECORD_DEVICES].create({c: str for c in DEVICE_COLUMNS}, pk="device_key")
    db.execute(f"INSERT OR IGNORE INTO {RECORD_DEVICES} SELECT DISTINCT {', '.join(DEVICE_COLUMNS)} FROM {TABLE}")


def _create_record_shapes(db) -> None:
    """Every shape with an ok record, per problem and device: a cold lookup reads a device's
    tuned shapes from it in one index range instead of seeking through its records."""
    db[RECORD_SHAPES].create({c: str for c in SHAPE_COLUMNS}, pk=SHAPE_COLUMNS)
    db.execute(f"INSERT OR IGNORE INTO {RECORD_SHAPES} SELECT DISTINCT {', '.join(SHAPE_COLUMNS)} FROM {TABLE} "
               "WHERE status = 'ok'")


# ---- the job queue and the demand log (tunesvc.cache.jobs) --------------------------------
#: a job's states, in the order it passes them (failed instead of done)
STATES = ("pending", "running", "done", "failed")
JOB_COLUMNS = ("id", "template", "shape", "dtype", "device_family", "trials", "time_budget", "state", "worker",
               "lease_until", "progress", "reason", "attempts", "submitted_at", "started_at", "finished_at", "device_key")
#: one demand row per problem asked for on one device
DEMAND_KEY = ("template", "template_hash", "dtype", "shape", "device_key")
#: the queue's tables, made where missing: ``IF NOT EXISTS``, so every opener may run them
QUEUE_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {JOBS} (
        id INTEGER PRIMARY KEY, template TEXT NOT NULL, shape TEXT NOT NULL, dtype TEXT NOT NULL,
        device_family TEXT NOT NULL DEFAULT '', trials INTEGER, time_budget REAL,
        state TEXT NOT NULL DEFAULT 'pending', worker TEXT, lease_until REAL, progress TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0, submitted_at TEXT NOT NULL,
        started_at TEXT, finished_at TEXT, device_key TEXT)""",
    f"CREATE INDEX IF NOT EXISTS {JOBS}_state ON {JOBS} (state, id)",
    f"""CREATE TABLE IF NOT EXISTS {DEMAND} (
        template TEXT NOT NULL, template_hash TEXT NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL,
        device_key TEXT NOT NULL, count INTEGER NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
        PRIMARY KEY ({', '.join(DEMAND_KEY)}))""",
)


def migrate_queue(conn, dialect: str = "sqlite") -> None:
    """Create the queue's tables where they are missing, inside the caller's transaction (a DB-API
    connection: the queue keeps its own, without sqlite-utils)."""
    for statement in QUEUE_DDL:
        conn.execute(pg_types(statement) if dialect == "postgresql" else statement)


# ---- PostgreSQL: the same tables, in its types -------------------------------------------
#: SQLite's column types as PostgreSQL spells them: 64-bit integers and floats (its REAL is 32-bit),
#: text compared byte by byte (COLLATE "C", as SQLite's BINARY: the same order, min() and max())
PG_TYPES = {int: "BIGINT", float: "DOUBLE PRECISION", str: 'TEXT COLLATE "C"'}
PG_IDENTITY = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
#: what every change to the tables a lookup reads bumps: the reader's PRAGMA data_version on PostgreSQL
DATA_VERSION = "data_version"
_PG_BUMP = "tunesvc_bump_data_version"


def pg_types(ddl: str) -> str:
    """One SQLite DDL statement of this module in PostgreSQL's types."""
    import re

    ddl = ddl.replace("INTEGER PRIMARY KEY", PG_IDENTITY)
    ddl = re.sub(r"\bINTEGER\b(?! GENERATED)", PG_TYPES[int], re.sub(r"\bREAL\b", PG_TYPES[float], ddl))
    return re.sub(r"\bTEXT\b", PG_TYPES[str], ddl)


def _pg_table(name: str, columns: dict, pk=(), not_null=()) -> str:
    cols = [f"{c} {PG_IDENTITY if c == 'id' and not pk else PG_TYPES[t]}{' NOT NULL' if c in not_null else ''}"
            for c, t in columns.items()]
    return f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(cols + ([f'PRIMARY KEY ({chr(44).join(pk)})'] if pk else []))})"


#: every table of the tuning database but the queue's, as PostgreSQL creates them
PG_TABLES = {
    TABLE: _pg_table(TABLE, COLUMNS, not_null=NOT_NULL),
    RECORD_DEVICES: _pg_table(RECORD_DEVICES, {c: str for c in DEVICE_COLUMNS}, pk=("device_key",)),
    RECORD_SHAPES: _pg_table(RECORD_SHAPES, {c: str for c in SHAPE_COLUMNS}, pk=SHAPE_COLUMNS),
    DEVICES: _pg_table(DEVICES, {"device_key": str, "id": str, "info": str, "updated_at": str}, pk=("device_key",)),
    META: _pg_table(META, {"key": str, "value": str}, pk=("key",)),
    CEILINGS: _pg_table(CEILINGS, {"device_key": str, "gbps": float, "gflops": float, "details": str, "measured_at": str},
                        pk=("device_key",)),
}
PG_INDEXES = (
    f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_key ON {TABLE} ({', '.join(KEY)})",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_problem ON {TABLE} (template, dtype, status, device_key)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_lookup ON {TABLE} ({', '.join(LOOKUP_INDEX)})",
    f"CREATE INDEX IF NOT EXISTS {DEVICES}_id ON {DEVICES} (id)",
)
_PG_TRIGGERS = (
    # once per transaction (a setting local to it says it was done): an import's executemany runs one
    # statement per row, and as many updates of one row cost 20x the inserts
    f"""CREATE OR REPLACE FUNCTION {_PG_BUMP}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        IF current_setting('tunesvc.{DATA_VERSION}_bumped', true) IS DISTINCT FROM '1' THEN
            UPDATE {META} SET value = (value::bigint + 1)::text WHERE key = '{DATA_VERSION}';
            PERFORM set_config('tunesvc.{DATA_VERSION}_bumped', '1', true);
        END IF;
        RETURN NULL; END $$""",
    *(f"CREATE OR REPLACE TRIGGER {t}_{DATA_VERSION} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t} "
      f"FOR EACH STATEMENT EXECUTE FUNCTION {_PG_BUMP}()" for t in (TABLE, RECORD_DEVICES, RECORD_SHAPES, DEVICES)),
)
#: the advisory lock migrations take: two processes making one fresh database never race
_PG_MIGRATION_LOCK = 0x7475_6E65


def pg_tables(conn) -> set[str]:
    """The tables of the connection's schema (its search path's first)."""
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    return {r[0] for r in rows}


def _pg_ddl_digest() -> str:
    import hashlib

    ddl = (*PG_TABLES.values(), *PG_INDEXES, *_PG_TRIGGERS, *map(pg_types, QUEUE_DDL))
    return hashlib.sha256("\n".join(ddl).encode()).hexdigest()[:16]


#: the ``meta`` row that says which DDL made the database: a database made by this very DDL opens
#: without running any (CREATE OR REPLACE TRIGGER locks its table against writers)
_PG_DDL = ("pg_ddl", _pg_ddl_digest())


def migrate_pg(conn, path) -> None:
    """Bring a PostgreSQL database to this schema inside the caller's transaction, keeping every row
    (PostgreSQL's DDL is transactional: a failed migration leaves the database as it was)."""
    if _pg_current(conn, path):
        return
    encoding = conn.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()").fetchone()
    if encoding and encoding[0] != "UTF8":  # device names and build logs are any Unicode text
        raise StoreError(f"tuning database {str(path)!r} has encoding {encoding[0]}; tunesvc stores Unicode text: "
                         "make the database with createdb -E UTF8 -T template0, or pass another --db")
    conn.execute(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    have = pg_tables(conn)
    if META in have and _pg_current(conn, path):  # another process migrated it meanwhile
        return
    for name, ddl in PG_TABLES.items():
        conn.execute(ddl)
    columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                          "current_schema() AND table_name = ?", (TABLE,))}
    for name, kind in COLUMNS.items():
        if name not in columns:
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {PG_TYPES[kind]}")
    for ddl in PG_INDEXES:
        conn.execute(ddl)
    if RECORD_DEVICES not in have:
        conn.execute(f"INSERT INTO {RECORD_DEVICES} SELECT DISTINCT {', '.join(DEVICE_COLUMNS)} FROM {TABLE} ON CONFLICT DO NOTHING")
    if RECORD_SHAPES not in have:
        conn.execute(f"INSERT INTO {RECORD_SHAPES} SELECT DISTINCT {', '.join(SHAPE_COLUMNS)} FROM {TABLE} "
                     "WHERE status = 'ok' ON CONFLICT DO NOTHING")
    conn.execute(f"INSERT INTO {META} VALUES ('schema_version', ?), ('{DATA_VERSION}', '0') ON CONFLICT DO NOTHING",
                 (str(SCHEMA_VERSION),))
    for ddl in _PG_TRIGGERS:
        conn.execute(ddl)
    migrate_queue(conn, "postgresql")
    conn.execute(f"INSERT INTO {META} VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", _PG_DDL)


def _pg_current(conn, path) -> bool:
    """Whether the database was made by this version's DDL; a newer schema is refused here."""
    if META not in pg_tables(conn):
        return False
    rows = dict(conn.execute(f"SELECT key, value FROM {META} WHERE key IN ('schema_version', ?)", (_PG_DDL[0],)).fetchall())
    error = newer_schema(path, rows["schema_version"]) if "schema_version" in rows else None
    if error:
        raise error
    return rows.get(_PG_DDL[0]) == _PG_DDL[1]


def pg_staging(name: str) -> tuple[str, ...]:
    """The import's staging table on PostgreSQL: a temporary table of the session, numbered in the
    order rows were staged (``seq``, SQLite's rowid there)."""
    cols = ", ".join(f"{c} {PG_TYPES[COLUMNS[c]]}" for c in ROW_COLUMNS)
    return (f"CREATE TEMP TABLE {name} (seq BIGINT GENERATED ALWAYS AS IDENTITY, {cols})",
            f"CREATE UNIQUE INDEX {name}_key ON {name} ({', '.join(KEY)})")
