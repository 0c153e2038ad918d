"""Share tuning databases: export to JSON Lines, validated import and merge.

An export is a header line (format name and version, tunesvc version,
creation time) and then one record per line, in the order of the store's
unique key, so two exports of the same data are byte-identical and diff well
in git; ``.gz`` files are gzip with a zero timestamp for the same reason, at level 1 (about 4x
faster to write than level 6, for a file about 1.2x larger: see docs/benchmarks.md).

An import validates every record (see :mod:`.validate`), merges all files in
one transaction under a policy, and leaves the database exactly as it was on
any error. Each record keeps its provenance in the ``source`` column. A valid line takes a fast path
(orjson, memoised checks; see :func:`.validate.fast_parse`) only where its answer is provably the
strict one; every other line, and every rejection, goes through the strict parser.
"""

from __future__ import annotations

import contextlib

import gzip
import itertools
import json
import math
import queue
import threading
import zlib
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from .. import templates
from .._version import __version__
from ..errors import ImportFileError, UsageError, clip
from .output import cannot_write, check_target, replace, temporary
from .interop import load_recorded, looks_like_json_object, recorded_records
from .schema import CEILINGS, EXPORT_FIELDS, KEY, MEASURED, PROVENANCE, SCHEMA_VERSION, TABLE, record_filter
from .store import Store
from .validate import (MAX_NAME, MIN_LINE, Checks, Rejected, decode, fast_parse, parse_line, read_raw_lines,
                       validate, _UNPRINTABLE)

FORMAT = "tunesvc-db"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
POLICIES = ("keep-fastest", "prefer-local", "prefer-incoming")
_LINE_FIELDS = tuple(f for f in EXPORT_FIELDS if f != "config")  # config goes last, pasted as its stored canonical JSON
_DATA = (*MEASURED, *PROVENANCE)  # what a merge weighs and writes of a stored record
_BATCH = 20_000
#: lines shorter than any record (blank ones included) an export may have: see records(); an export
#: has none but its header, and each costs 10-30 µs, so a file of junk is refused within a second
MAX_SHORT_LINES = 10_000
_CHUNK = 8192  # export lines per write (~5 MiB)
#: gzip level of exports: 1 compresses ~4x faster than 6 for files ~1.3x larger (docs/benchmarks.md)
GZIP_LEVEL = 1
_EXPORT_CACHE_KIB = 256 * 1024
_EXPORT_MMAP = 1 << 32
_SQLITE_MAGIC = b"SQLite format 3\x00"


# ---- export ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportSummary:
    path: str
    records: int
    bytes: int


def _export_query(device, template, best_only: bool) -> tuple[str, list]:
    where, args = record_filter(template, device)
    if best_only:  # the fastest ok config of each problem
        where = (f"id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY {', '.join(KEY[:-1])} "
                 f"ORDER BY time_median, config) AS rn FROM {TABLE} WHERE status = 'ok' AND {where}) AS ranked WHERE rn = 1)")
    cols = ", ".join(_LINE_FIELDS + ("config",))
    return f"SELECT {cols} FROM {TABLE} WHERE {where} ORDER BY {', '.join(KEY)}", args


_encode_str = json.encoder.encode_basestring_ascii  # what JSONEncoder(ensure_ascii=True) uses for a str
_REPEATED = _LINE_FIELDS.index("time_median")  # template .. reason: a handful of distinct values across millions of rows
_NUMBERS = slice(_REPEATED, _LINE_FIELDS.index("created_at"))  # time_median .. compile_seconds
_MEMO_MAX = 200_000


def _line_format() -> str:
    """'{"template":%s,...,"config":%s}\n': one %-format per line instead of a dict and an encoder."""
    keys = [f'"{k}":%s' for k in _LINE_FIELDS] + ['"config":%s']
    return "{" + ",".join(keys) + "}\n"


def _json_value(v) -> str:
    """One column as JSONEncoder(allow_nan=False) writes it (the general path)."""
    if v is None:
        return "null"
    if type(v) is str:
        return _encode_str(v)
    if type(v) is float and not math.isfinite(v):
        raise ValueError("Out of range float values are not JSON compliant: " + repr(v))
    if type(v) not in (int, float):
        raise TypeError(f"Object of type {type(v).__name__} is not JSON serializable")
    return repr(v)


_PLAIN_NUMBERS = frozenset((int, float))


def _lines(rows):
    """Export lines, byte-identical to encoding each row as a dict with JSONEncoder(separators=(",", ":"),
    allow_nan=False): the repeated leading and trailing strings are encoded once, the numbers by repr
    (what the encoder uses), and the stored config JSON is pasted as it is."""
    fmt, memo = _line_format(), {}
    head_fmt = fmt[:fmt.index('"time_median"')]
    num_fmt = fmt[len(head_fmt):fmt.index(',"created_at"')]
    tail_fmt = fmt[len(head_fmt) + len(num_fmt):fmt.index('%s}')]
    for row in rows:
        head = memo.get(row[:_REPEATED])
        if head is None:
            if len(memo) > _MEMO_MAX:  # unique reasons (build logs) must not grow it without bound
                memo.clear()
            head = memo[row[:_REPEATED]] = head_fmt % tuple(map(_json_value, row[:_REPEATED]))
        numbers = row[_NUMBERS]
        if set(map(type, numbers)) <= _PLAIN_NUMBERS:
            mid = num_fmt % numbers  # %s of an int or float is its repr: what the encoder writes
            if "inf" in mid or "nan" in mid:  # no key of these columns contains either
                mid = num_fmt % tuple(map(_json_value, numbers))  # raises ValueError like the encoder
        else:
            mid = num_fmt % tuple(map(_json_value, numbers))
        tail = memo.get(row[_NUMBERS.stop:-1])
        if tail is None:
            tail = memo[row[_NUMBERS.stop:-1]] = tail_fmt % tuple(map(_json_value, row[_NUMBERS.stop:-1]))
        yield f"{head}{mid}{tail}{row[-1]}}}\n"


def export(path: str | Path, db=None, device: str | None = None, template: str | None = None,
           best_only: bool = False) -> ExportSummary:
    """Write the matching records of the database ``db`` to ``path`` (gzip when it ends in .gz): a new
    file, or one that replaces a regular file; never a device node (/dev/full) or anything else."""
    path = Path(path)
    check_target(path)
    store = db if isinstance(db, Store) else Store(db, readonly=True)
    try:
        # the key order visits table pages at random: mapped pages and a large cache read them ~1.5x faster
        with store.reading(), store.scanning(_EXPORT_CACHE_KIB, _EXPORT_MMAP):
            return _export(store, path, device, template, best_only)
    finally:
        if store is not db:
            store.close()


def _export(store: Store, path: Path, device, template, best_only: bool) -> ExportSummary:
    sql, args = _export_query(device, template, best_only)
    empty = TABLE not in store.table_names()  # an empty file: a database without records yet
    newest = None if empty else store.read(f"SELECT max(created_at) FROM ({sql}) AS exported", args).fetchone()[0]
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "tunesvc_version": __version__,
              "created_at": newest or "1970-01-01T00:00:00+00:00"}  # the data's time, so re-exports are identical
    tmp, count = None, 0
    try:
        tmp = temporary(path, "export")
        with open(tmp, "wb") as raw:
            gz = path.suffix == ".gz"
            out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) if gz else raw
            with _Background(out.write) as write:  # zlib and file writes let go of the GIL: overlap them with formatting
                write((json.dumps(header, sort_keys=True, separators=(",", ":")) + "\n").encode())
                rows = iter(()) if empty else store.stream(sql, args)
                lines = _lines(rows)
                while chunk := list(itertools.islice(lines, _CHUNK)):
                    write("".join(chunk).encode())
                    count += len(chunk)
            if out is not raw:
                out.close()
        replace(tmp, path)  # never leave a half-written export under the real name
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return ExportSummary(str(path), count, path.stat().st_size)


class _Background:
    """Calls ``fn`` on each item in a second thread, a few items behind the caller; re-raises its error."""

    def __init__(self, fn):
        self.fn, self.queue, self.error = fn, queue.Queue(maxsize=4), None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.fn(item)
                except BaseException as e:  # handed to the caller's thread
                    self.error = e
            self.queue.task_done()
        self.queue.task_done()

    def __call__(self, item):
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def wait(self) -> None:
        """Return once every item handed over so far is done; raise the thread's error if one failed."""
        self.queue.join()
        if self.error is not None:
            raise self.error

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error
        return False


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
    _, raw = first
    text = raw if isinstance(raw, Rejected) else decode(raw)
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


@contextlib.contextmanager
def _reading(path: str | Path):
    """An open export file; a corrupt or unreadable one becomes ImportFileError."""
    stream = open_binary(path)
    try:
        yield stream
    except _CORRUPT as e:
        raise ImportFileError(f"{str(path)!r} is truncated or corrupt ({e}); nothing was imported") from None
    except OSError as e:
        raise ImportFileError(f"cannot read {str(path)!r}: {e}") from None
    finally:
        stream.close()


def check_file(path: str | Path) -> dict:
    """The header of an export file; raise ImportFileError if it is not one."""
    with _reading(path) as stream:
        return read_header(read_raw_lines(stream), path)


def records(path: str | Path, checks: Checks | None = None):
    """Yield (line number, row dict or Rejected) for each record of an export file.

    Raises ImportFileError for a file that is not an export at all, or that ends
    in the middle of its compressed stream."""
    checks, short = checks or Checks(), 0
    with _reading(path) as stream:
        lines = read_raw_lines(stream)
        read_header(lines, path)
        for number, raw in lines:
            if isinstance(raw, Rejected):
                yield number, raw
                continue
            if len(raw) < MIN_LINE:  # blank or junk: each costs a fixed time, and a .gz packs a million in a few KB
                short += 1
                if short > MAX_SHORT_LINES:
                    raise ImportFileError(f"{str(path)!r} has more than {MAX_SHORT_LINES} lines too short to hold a "
                                          "record (blank lines or junk); it is not a tunesvc export: nothing was imported")
                if not raw or raw.isspace():
                    continue
            row = _fast(raw, checks)
            if row is not None:
                yield number, row
            else:  # the strict path words any reason, exactly as for every line before the fast one
                yield from _strict(number, raw, checks)


def _fast(raw: bytes, checks: Checks) -> dict | None:
    """The row of a valid line on the fast path, else None."""
    obj = fast_parse(raw)
    if obj is None:
        return None
    try:
        return validate(obj, checks)
    except Rejected:
        return None


def _strict(number: int, raw: bytes, checks: Checks):
    """(number, row or Rejected) of one line through the strict parser; nothing for a blank line."""
    text = decode(raw)
    if isinstance(text, Rejected):
        yield number, text
    elif text.strip():
        try:
            yield number, validate(parse_line(text), checks)
        except Rejected as e:
            yield number, e


# ---- import and merge --------------------------------------------------------------------
#: distinct rejection reasons counted apart; beyond, the rest are counted under one (a hostile file
#: could give every line a reason of its own)
MAX_REASONS = 1000
_OTHER_REASONS = "other reasons (more than 1000 distinct ones)"
#: rejected records a file may have beyond those it has accepted before it is refused as a whole: each
#: costs a fixed time, and a small .gz or a Kernel Tuner file of tiny entries can hold millions
MAX_REJECTED = 100_000


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
        if reason not in self.rejected and len(self.rejected) >= MAX_REASONS:
            reason = _OTHER_REASONS
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        at = self.rejected_at.setdefault(reason, [])
        if len(at) < 3:
            at.append(where)
        if len(self.examples) < 100:
            self.examples.append(f"{where}: {reason}")

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


_STATUS, _TIME, _SOURCE = _DATA.index("status"), _DATA.index("time_median"), _DATA.index("source")
#: the source of this machine's own measurements (a record stored before sources were kept has none)
LOCAL = ("local", None)
_KEEP_LOCAL = "this device's own measurement is kept (source 'local'; only --policy prefer-incoming replaces it)"


def _skip_reason(policy: str, old: tuple, new: tuple) -> str | None:
    """Why ``new`` does not replace ``old`` (both in _DATA order), or None when it does."""
    if old == new:
        return "identical record already present"
    if policy == "prefer-local":
        return "a stored record of the same config exists (prefer-local)"
    if policy == "keep-fastest":
        if old[_SOURCE] in LOCAL:
            return _KEEP_LOCAL
        new_ok, old_ok = new[_STATUS] == "ok", old[_STATUS] == "ok"
        if not new_ok or (old_ok and new[_TIME] >= old[_TIME]):
            return "the stored measurement is as fast or faster (keep-fastest)"
    return None


#: each policy again as the condition under which a staged row replaces the stored one, checked by the
#: merge against the row stored at that moment (another writer may have written it since it was read)
_GUARDS = {
    "prefer-incoming": None,
    "prefer-local": "nothing",
    "keep-fastest": (f"coalesce({TABLE}.source, 'local') != 'local' AND excluded.status = 'ok' "
                     f"AND ({TABLE}.status != 'ok' OR excluded.time_median < {TABLE}.time_median)"),
}

_KEY_OF = itemgetter(*KEY)
_GROUPS = 64  # groups kept at once
_GROUP_MAX = 4096  # configs of one group worth keeping
_SEEN_MAX = 2_000_000  # keys remembered as new; beyond, each is looked up
_DATA_OF = itemgetter(*_DATA)


class _Merger:
    """Applies a policy record by record against what is stored and what this import staged before.
    Full batches are staged by a second thread (SQLite lets go of the GIL while it inserts) while this
    one reads and validates the next; one batch at most is in flight, and no query runs until it has
    landed. Nothing here writes the database file: :meth:`Staging.merge` does, once every file is read."""

    def __init__(self, store: Store, policy: str, summary: ImportSummary, writer: "_Background"):
        self.store, self.policy, self.summary, self.writer = store, policy, summary, writer
        self.batch: dict[tuple, dict] = {}
        self.inflight: dict[tuple, dict] = {}  # the batch the writer thread is staging
        self.hashes: dict[str, str] = {}
        where = " AND ".join(f"{k} = ?" for k in KEY)
        self.select = [f"SELECT {', '.join(_DATA)} FROM {t} WHERE {where}" for t in (store.staged, TABLE)]
        # Into a table empty when the import began, a key can only be stored if this import staged it
        # (or another writer wrote it since: the merge's guard weighs it then): no query for a new key.
        self.seen: set | None = set() if store.read(f"SELECT 1 FROM {TABLE} LIMIT 1").fetchone() is None else None
        # Otherwise the records of one problem on one device (a group: the key less the config) in one
        # query, since an export lists a group's configs one after another.
        self.groups: dict[tuple, dict | None] = {}
        prefix = " AND ".join(f"{k} = ?" for k in KEY[:-1])
        self.select_group = [f"SELECT config, {', '.join(_DATA)} FROM {t} WHERE {prefix} LIMIT {_GROUP_MAX + 1}"
                             for t in (TABLE, store.staged)]

    def _stored(self, key: tuple):
        if self.seen is not None:
            h = hash(key)
            if h not in self.seen:
                if len(self.seen) >= _SEEN_MAX:  # memory stays bounded: from now on each key is looked up
                    self.seen = None
                else:
                    self.seen.add(h)
                    return None
        prefix = key[:-1]
        group = self.groups[prefix] if prefix in self.groups else self._group(prefix)
        if group is not None:
            return group.get(key[-1])
        self.writer.wait()  # one connection: never query while the writer thread uses it
        for select in self.select:  # staged first: it is what this import will write
            row = self.store.read(select, key).fetchone()
            if row is not None:
                return row
        return None

    def _group(self, prefix: tuple) -> dict | None:
        """{config: data} of one group, staged rows over stored ones, or None for a group too large to
        keep (then one query per key)."""
        if len(self.groups) >= _GROUPS:
            self.groups.clear()
        self.writer.wait()
        group: dict = {}
        for select in self.select_group:
            rows = self.store.read(select, prefix).fetchall()
            if len(rows) > _GROUP_MAX:
                self.groups[prefix] = None
                return None
            group.update((r[0], r[1:]) for r in rows)
        self.groups[prefix] = group
        return group

    def offer(self, row: dict) -> None:
        key = _KEY_OF(row)
        pending = self.batch.get(key) or self.inflight.get(key)
        old = _DATA_OF(pending) if pending else self._stored(key)
        if old is not None:
            why = _skip_reason(self.policy, old, _DATA_OF(row))
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
        group = self.groups.get(key[:-1])
        if group is not None:  # keep the kept group what the database will hold
            group[key[-1]] = _DATA_OF(row)
        if len(self.batch) >= _BATCH:
            self.flush()

    def _hash(self, name: str) -> str:
        if name not in self.hashes:
            self.hashes[name] = templates.get(name).source_hash
        return self.hashes[name]

    def flush(self) -> None:
        """Hand the batch to the writer thread, after the one before it has landed."""
        self.writer.wait()
        self.inflight, self.batch = self.batch, {}
        if self.inflight:
            self.writer(list(self.inflight.values()))


def _label(path: Path, source: str | None) -> str:
    label = source if source is not None else path.name
    if not label or len(label) > MAX_NAME or _UNPRINTABLE.search(label) or "|" in label:
        raise UsageError(f"source label {clip(label, 40)} must be 1 to {MAX_NAME} printable characters without '|'")
    if label in LOCAL:
        raise UsageError("source label 'local' is this machine's own measurements; name the import's source otherwise")
    return label


def import_files(paths, db=None, policy: str = "keep-fastest", dry_run: bool = False,
                 source: str | None = None) -> ImportSummary:
    """Validate export files (and Kernel Tuner or T4 files) and merge them into ``db``.

    Every file is read to its end and each accepted record staged outside the database before the
    database changes at all, so a file that turns out damaged (or has too many bad lines) leaves it
    byte-for-byte as it was; a dry run stops there. The merge then writes in short transactions, so
    other writers wait a fraction of a second at a time, never for the whole import."""
    if policy not in POLICIES:
        raise UsageError(f"unknown policy {clip(policy, 40)}; use one of {', '.join(POLICIES)}")
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
    """None for a tunesvc export, else the header of a Kernel Tuner or T4 file (read through once)."""
    try:
        check_file(path)
        return None
    except NotAnExport:
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
    with store.staging() as staging:
        with _Background(staging.add) as writer:
            merger, checks, plausible = _Merger(store, policy, summary, writer), Checks(), Plausible(store)
            for path, space, label in zip(paths, sources, labels):
                rows = records(path, checks) if space is None else recorded_records(path, space, checks)
                valid, rejected = _valid(summary), 0
                for number, row in rows:
                    if not isinstance(row, Rejected):
                        row = plausible(row)
                    if isinstance(row, Rejected):
                        summary.reject(f"{path.name}:{number}", str(row))
                        rejected += 1
                        if rejected > MAX_REJECTED and rejected > _valid(summary) - valid:
                            _refuse(summary, path)
                        continue
                    row["schema_version"], row["source"] = SCHEMA_VERSION, label
                    merger.offer(row)
            merger.flush()
            writer.wait()
        if not dry_run:
            staging.merge(_GUARDS[policy], summary.added)
    return summary


def _valid(summary: ImportSummary) -> int:
    """Records read so far that were not rejected."""
    return summary.added + summary.replaced + sum(summary.skipped.values())


def _refuse(summary: ImportSummary, path: Path) -> None:
    """A file with more than MAX_REJECTED rejected records, and more of them than valid ones, is refused
    whole: the import's time stays proportional to what it can import."""
    top = max(summary.rejected.items(), key=lambda kv: kv[1])[0]
    raise ImportFileError(f"{str(path)!r}: more than {MAX_REJECTED} records rejected, more than were valid "
                          f"(most often: {clip(top, 200)}); nothing was imported")


class Plausible:
    """Rejects an imported ok time faster than the device's stored roofline ceilings allow (a record
    claiming 1e-12 s would otherwise become the exact answer): above SLACK_FLOPS times its measured
    FMA throughput or physical peak, or SLACK_BYTES times its measured bandwidth (caches go beyond
    what memory gives, not 20-fold)."""

    SLACK_FLOPS, SLACK_BYTES = 4.0, 20.0

    def __init__(self, store: Store):
        self.limits: dict[str, tuple] = {}
        if CEILINGS in store.table_names():
            for key, gbps, gflops, details in store.read(f"SELECT device_key, gbps, gflops, details FROM {CEILINGS}"):
                self.limits[key] = self._limit(gbps, gflops, details)
        self.work: dict[tuple, tuple | None] = {}

    @staticmethod
    def _limit(gbps, gflops, details) -> tuple:
        try:
            extra = json.loads(details or "{}")
        except ValueError:
            extra = {}
        peak = max(gflops or 0.0, float(extra.get("peak_gflops") or 0.0)) if isinstance(extra, dict) else gflops or 0.0
        bandwidth = max(gbps or 0.0, float(extra.get("read_gbps") or 0.0)) if isinstance(extra, dict) else gbps or 0.0
        reason = (f"implausibly fast for this device: beyond {Plausible.SLACK_FLOPS:g}x its measured {peak:.1f} GFLOP/s "
                  f"or {Plausible.SLACK_BYTES:g}x its {bandwidth:.1f} GB/s (tunesvc devices --probe measured them)")
        return peak * Plausible.SLACK_FLOPS * 1e9, bandwidth * Plausible.SLACK_BYTES * 1e9, Rejected(reason)

    def __call__(self, row: dict):
        """The row, or Rejected when its time is implausible."""
        limit = self.limits.get(row["device_key"])
        if limit is None or row["status"] != "ok":
            return row
        work = self._work(row["template"], row["shape"], row["dtype"])
        t = row["time_median"]
        if work and ((limit[0] and work[0] > limit[0] * t) or (limit[1] and work[1] > limit[1] * t)):
            return limit[2]
        return row

    def _work(self, template: str, shape: str, dtype: str) -> tuple | None:
        """(FLOP, bytes) of one run of a problem, or None where the template cannot say."""
        key = (template, shape, dtype)
        if key not in self.work:
            if len(self.work) > 100_000:
                self.work.clear()
            try:
                tpl, dims = templates.get(template), tuple(int(d) for d in shape.split("x"))
                self.work[key] = (float(tpl.flops(dims)), float(tpl.bytes_moved(dims, dtype)))
            except Exception:  # a template's count for a shape it rejects: no check, the record is not at fault
                self.work[key] = None
        return self.work[key]
