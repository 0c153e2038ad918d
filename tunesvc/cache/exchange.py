"""Share tuning databases: export to JSON Lines, validated import and merge.

An export is a header line (format name and version, tunesvc version,
creation time) and then one record per line, in the order of the store's
unique key, so two exports of the same data are byte-identical and diff well
in git; ``.gz`` files are gzip with a zero timestamp for the same reason.

An import validates every record (see :mod:`.validate`), merges all files in
one transaction under a policy, and leaves the database exactly as it was on
any error. Each record keeps its provenance in the ``source`` column.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, templates
from ..errors import ImportFileError, UsageError
from .interop import load_recorded, looks_like_json_object, recorded_records
from .store import KEY, SCHEMA_VERSION, TABLE, Store
from .validate import FIELDS, MAX_NAME, Checks, Rejected, parse_line, read_lines, validate

FORMAT = "tunesvc-db"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
POLICIES = ("keep-fastest", "prefer-local", "prefer-incoming")
_LINE_FIELDS = tuple(f for f in FIELDS if f != "config")  # config goes last, pasted as its stored canonical JSON
_DATA = tuple(c for c in ("status", "reason", "time_median", "time_min", "time_max", "time_iqr", "runs", "gflops",
                          "gbps", "compile_seconds", "created_at", "tunesvc_version", "source"))
_BATCH = 20_000
_SQLITE_MAGIC = b"SQLite format 3\x00"


# ---- export ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportSummary:
    path: str
    records: int
    bytes: int


def _filters(device: str | None, template: str | None) -> tuple[str, list]:
    where, args = [], []
    if template:
        where.append("template = ?")
        args.append(template)
    if device:  # as in Store.records: a fingerprint key or a name substring
        where.append("(device_key = ? OR device_name LIKE ?)")
        args += [device, f"%{device}%"]
    return " AND ".join(where) or "1", args


def _export_query(device, template, best_only: bool) -> tuple[str, list]:
    where, args = _filters(device, template)
    if best_only:  # the fastest ok config of each problem
        where = (f"id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY {', '.join(KEY[:-1])} "
                 f"ORDER BY time_median, config) AS rn FROM {TABLE} WHERE status = 'ok' AND {where}) WHERE rn = 1)")
    cols = ", ".join(_LINE_FIELDS + ("config",))
    return f"SELECT {cols} FROM {TABLE} WHERE {where} ORDER BY {', '.join(KEY)}", args


def _lines(rows):
    dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    for row in rows:
        head = dumps(dict(zip(_LINE_FIELDS, row)))
        yield f'{head[:-1]},"config":{row[-1]}}}\n'


def export(path: str | Path, db=None, device: str | None = None, template: str | None = None,
           best_only: bool = False) -> ExportSummary:
    """Write the matching records of the database ``db`` to ``path`` (gzip when it ends in .gz)."""
    store = db if isinstance(db, Store) else Store(db, readonly=True)
    try:
        return _export(store, Path(path), device, template, best_only)
    finally:
        if store is not db:
            store.close()


def _export(store: Store, path: Path, device, template, best_only: bool) -> ExportSummary:
    sql, args = _export_query(device, template, best_only)
    newest = store.db.execute(f"SELECT max(created_at) FROM ({sql})", args).fetchone()[0]
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "tunesvc_version": __version__,
              "created_at": newest or "1970-01-01T00:00:00+00:00"}  # the data's time, so re-exports are identical
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with open(tmp, "wb") as raw:
            out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) if path.suffix == ".gz" else raw
            out.write((json.dumps(header, sort_keys=True, separators=(",", ":")) + "\n").encode())
            chunk: list[str] = []
            for line in _lines(store.db.execute(sql, args)):
                chunk.append(line)
                if len(chunk) == 4096:
                    out.write("".join(chunk).encode())
                    count += len(chunk)
                    chunk.clear()
            out.write("".join(chunk).encode())
            count += len(chunk)
            if out is not raw:
                out.close()
        os.replace(tmp, path)  # never leave a half-written export under the real name
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {str(path)!r}: {e.strerror or e}; choose another path") from None
    finally:
        tmp.unlink(missing_ok=True)
    return ExportSummary(str(path), count, path.stat().st_size)


# ---- reading files -----------------------------------------------------------------------
def open_binary(path: str | Path):
    """A binary stream of a file, gunzipped if it is gzip; refuse SQLite databases."""
    p = Path(path)
    if not p.is_file():
        raise ImportFileError(f"{str(p)!r} does not exist or is not a file")
    try:
        with open(p, "rb") as f:
            magic = f.read(16)
        if magic.startswith(_SQLITE_MAGIC):
            raise ImportFileError(f"{str(p)!r} is a SQLite database, not an export; export it first: tunesvc export out.jsonl --db {p}")
        return gzip.open(p, "rb") if magic[:2] == b"\x1f\x8b" else open(p, "rb")
    except OSError as e:
        raise ImportFileError(f"cannot read {str(p)!r}: {e.strerror or e}") from None


class NotAnExport(ImportFileError):
    """The file does not start with a tunesvc export header (it may be another format)."""


def read_header(lines, path) -> dict:
    """Check the first line: a tunesvc export of a known format version."""
    hint = f"{str(path)!r} is not a tunesvc export (its first line must be a {FORMAT} header); make one with 'tunesvc export'"
    first = next(lines, None)
    if first is None:
        raise NotAnExport(f"{str(path)!r} is empty; {hint.split('; ')[1]}")
    _, text = first
    if isinstance(text, Rejected):
        raise NotAnExport(f"{hint} ({text})")
    try:
        header = parse_line(text)
    except Rejected:
        raise NotAnExport(hint) from None
    if header.get("format") != FORMAT:
        raise NotAnExport(hint)
    version = header.get("format_version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise ImportFileError(f"{str(path)!r} has format version {str(version)[:20]}; this tunesvc {__version__} reads "
                              f"version(s) {list(SUPPORTED_VERSIONS)}: upgrade tunesvc")
    return header


_CORRUPT = (EOFError, gzip.BadGzipFile, zlib.error)


def check_file(path: str | Path) -> dict:
    """The header of an export file; raise ImportFileError if it is not one."""
    stream = open_binary(path)
    try:
        return read_header(read_lines(stream), path)
    except _CORRUPT as e:
        raise ImportFileError(f"{str(path)!r} is truncated or corrupt ({e}); nothing was imported") from None
    except OSError as e:
        raise ImportFileError(f"cannot read {str(path)!r}: {e}") from None
    finally:
        stream.close()


def records(path: str | Path, checks: Checks | None = None):
    """Yield (line number, row dict or Rejected) for each record of an export file.

    Raises ImportFileError for a file that is not an export at all, or that ends
    in the middle of its compressed stream."""
    checks = checks or Checks()
    stream = open_binary(path)
    try:
        lines = read_lines(stream)
        read_header(lines, path)
        for number, text in lines:
            if isinstance(text, Rejected):
                yield number, text
                continue
            if not text.strip():
                continue
            try:
                yield number, validate(parse_line(text), checks)
            except Rejected as e:
                yield number, e
    except _CORRUPT as e:
        raise ImportFileError(f"{str(path)!r} is truncated or corrupt ({e}); nothing was imported") from None
    except OSError as e:
        raise ImportFileError(f"cannot read {str(path)!r}: {e}") from None
    finally:
        stream.close()


# ---- import and merge --------------------------------------------------------------------
@dataclass
class ImportSummary:
    """What an import did (or, with dry_run, would do). Every record read is counted once."""

    files: tuple[str, ...]
    policy: str
    dry_run: bool
    added: int = 0
    replaced: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> count
    rejected: dict = field(default_factory=dict)  # reason -> count
    examples: list = field(default_factory=list)  # "file:line: reason" of the first rejections
    rejected_at: dict = field(default_factory=dict)  # reason -> the first few "file:line" rejected for it
    stale: int = 0  # accepted records of an older template version: kept, never served as exact answers

    @property
    def read(self) -> int:
        return self.added + self.replaced + sum(self.skipped.values()) + sum(self.rejected.values())

    def reject(self, where: str, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        at = self.rejected_at.setdefault(reason, [])
        if len(at) < 3:
            at.append(where)
        if len(self.examples) < 100:
            self.examples.append(f"{where}: {reason}")

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _skip_reason(policy: str, old: tuple, new: tuple) -> str | None:
    """Why ``new`` does not replace ``old`` (both in _DATA order), or None when it does."""
    if old == new:
        return "identical record already present"
    if policy == "prefer-local":
        return "a stored record of the same config exists (prefer-local)"
    if policy == "keep-fastest":
        new_ok, old_ok = new[0] == "ok", old[0] == "ok"
        if not new_ok or (old_ok and new[2] >= old[2]):
            return "the stored measurement is as fast or faster (keep-fastest)"
    return None


class _Merger:
    """Applies a policy record by record inside the caller's transaction."""

    def __init__(self, store: Store, policy: str, summary: ImportSummary):
        self.store, self.policy, self.summary = store, policy, summary
        self.batch: dict[tuple, dict] = {}
        self.hashes: dict[str, str] = {}
        self.select = f"SELECT {', '.join(_DATA)} FROM {TABLE} WHERE " + " AND ".join(f"{k} = ?" for k in KEY)
        # Into a table empty when the transaction began (no one else writes until it ends), a key
        # can only exist if this import wrote it: skip the query for keys not seen before.
        self.seen: set | None = set() if store.db.execute(f"SELECT 1 FROM {TABLE} LIMIT 1").fetchone() is None else None

    def _stored(self, key: tuple):
        if self.seen is not None:
            h = hash(key)
            if h not in self.seen:
                self.seen.add(h)
                return None
        return self.store.db.conn.execute(self.select, key).fetchone()

    def offer(self, row: dict) -> None:
        key = tuple(row[k] for k in KEY)
        pending = self.batch.get(key)
        old = tuple(pending[c] for c in _DATA) if pending else self._stored(key)
        if old is not None:
            why = _skip_reason(self.policy, old, tuple(row[c] for c in _DATA))
            if why:
                self.summary.skip(why)
                return
        if old is None:
            self.summary.added += 1
        else:
            self.summary.replaced += 1
        if row["template_hash"] != self._hash(row["template"]):
            self.summary.stale += 1
        self.batch[key] = row
        if len(self.batch) >= _BATCH:
            self.flush()

    def _hash(self, name: str) -> str:
        if name not in self.hashes:
            self.hashes[name] = templates.get(name).source_hash
        return self.hashes[name]

    def flush(self) -> None:
        self.store._upsert(list(self.batch.values()))
        self.batch.clear()


def _label(path: Path, source: str | None) -> str:
    label = source if source is not None else path.name
    if not label or len(label) > MAX_NAME or any(c in label for c in "|\x00\n"):
        raise UsageError(f"source label {label[:40]!r} must be 1 to {MAX_NAME} printable characters without '|'")
    return label


def import_files(paths, db=None, policy: str = "keep-fastest", dry_run: bool = False,
                 source: str | None = None) -> ImportSummary:
    """Validate and merge export files into ``db`` in one transaction; roll back on any error or dry run."""
    if policy not in POLICIES:
        raise UsageError(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("name at least one file to import")
    labels = [_label(p, source) for p in paths]
    sources = [_source(p) for p in paths]  # refuse a file of no known format before the database is touched
    store = db if isinstance(db, Store) else Store(db)
    try:
        return _merge(store, paths, sources, labels, policy, dry_run)
    finally:
        if store is not db:
            store.close()


def _source(path: Path):
    """None for a tunesvc export, else the RecordedSpace of a Kernel Tuner or T4 file."""
    try:
        check_file(path)
        return None
    except NotAnExport as e:
        if not looks_like_json_object(path):
            raise
        try:
            return load_recorded(path)
        except ImportFileError as other:
            why = str(other).removeprefix(f"{path}: ")
            raise ImportFileError(f"{str(path)!r} is neither a tunesvc export (no {FORMAT} header line) "
                                  f"nor a Kernel Tuner or T4 file ({why})") from None


def _merge(store: Store, paths: list[Path], sources: list, labels: list[str], policy: str, dry_run: bool) -> ImportSummary:
    summary = ImportSummary(tuple(str(p) for p in paths), policy, dry_run)
    conn = store.db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        merger, checks = _Merger(store, policy, summary), Checks()
        for path, space, label in zip(paths, sources, labels):
            rows = records(path, checks) if space is None else recorded_records(path, space, checks)
            for number, row in rows:
                if isinstance(row, Rejected):
                    summary.reject(f"{path.name}:{number}", str(row))
                    continue
                row["schema_version"], row["source"] = SCHEMA_VERSION, label
                merger.offer(row)
        merger.flush()
    except BaseException:
        conn.rollback()
        raise
    if dry_run:
        conn.rollback()
    else:
        conn.commit()
    return summary
