"""Demand: the lookups answered below ``exact``, counted in memory and written in the background.

A lookup that misses calls :meth:`Buffer.add` with its problem and the database it read: a dict
increment under an uncontended lock, nothing else. A daemon thread writes the counts into that
database's demand table every :data:`FLUSH_SECONDS` (``Queue.add_demand``: one transaction per
database), and again at interpreter exit. A write that fails (a read-only file, a locked or
damaged database) is logged at debug and never reaches the lookup: busy databases are retried at
the next flush, the others dropped for the rest of the process. A database file that does not
exist is never made for demand (a lookup never creates one). After a fork the child starts with
no counts (its parent flushes its own) and no thread (it starts one on its first miss).

:func:`listing` reads the demand back: what was asked for and never tuned, most asked first.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import StoreError
from ..settings import db_path, is_server_url
from .jobs import Queue
from .schema import migrate_queue

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # between two writes of the counts
EXIT_SECONDS = 2.0  # at most this long spent writing them at interpreter exit
BUSY_SECONDS = 0.5  # how long one write waits for another writer's lock
MAX_KEYS = 100_000  # distinct problems held between two writes; beyond, new ones wait for the next


_clock = time.time


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class Buffer:
    """Counts of missed problems, per database, until the next write.

    A key is ``(database path, template, template hash, dtype, shape text, device key)``."""

    def __init__(self, interval: float = FLUSH_SECONDS):
        self.interval = interval
        self._reset()

    def _reset(self) -> None:
        self._counts: dict = {}  # key -> [count, first seen, last seen] (time.time())
        self._lock = threading.Lock()  # guards _counts: taken by add and by the swap in take
        self._flushing = threading.Lock()  # one write at a time (the thread's and the exit's)
        self._starting = threading.Lock()  # never the one a flush holds: a miss must not wait for a write
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.refused: set = set()  # databases that refused a write (read-only, damaged): not tried again

    def add(self, key: tuple) -> None:
        """Count one miss of ``key``; starts the writer thread on the first one."""
        with self._lock:
            entry = self._counts.get(key)
            if entry is not None:
                entry[0] += 1  # last seen: when the counts are taken (within a flush interval), no clock read here
                return
            if len(self._counts) < MAX_KEYS:
                now = _clock()
                self._counts[key] = [1, now, now]
        if self._thread is None:  # a new key only: an old one was counted after a start
            self._start()

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tunesvc-demand", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def pending(self) -> int:
        """Distinct problems counted and not written yet."""
        return len(self._counts)

    def take(self) -> dict:
        """The counts so far, handed over (the buffer starts again empty): key -> [count, first seen,
        last seen], last seen being now for a problem asked more than once."""
        with self._lock:
            counts, self._counts = self._counts, {}
        now = _clock()
        for entry in counts.values():
            if entry[0] > 1:
                entry[2] = max(entry[2], now)  # asked again since first: seen last by now
        return counts

    def _put_back(self, counts: dict) -> None:
        with self._lock:
            for key, (n, first, last) in counts.items():
                entry = self._counts.get(key)
                if entry is None:
                    self._counts[key] = [n, first, last]
                else:
                    entry[0], entry[1], entry[2] = entry[0] + n, min(entry[1], first), max(entry[2], last)

    def flush(self) -> int:
        """Write the counts into their databases; the number of problems written. Never raises."""
        with self._flushing:
            by_db: dict = {}
            for (path, *problem), value in self.take().items():
                by_db.setdefault(path, {})[tuple(problem)] = value
            written = 0
            for path, counts in by_db.items():
                written += self._write(path, counts)
            return written

    def _write(self, target: str, counts: dict) -> int:
        server = is_server_url(target)
        if target in self.refused or not (server or Path(target).is_file()):
            return 0  # refused before, or gone (a database is never made for demand)
        rows = {k: (n, _iso(first), _iso(last)) for k, (n, first, last) in counts.items()}
        try:
            (_add_server if server else _add)(target, rows)
        except Exception as e:  # whatever it is (StoreError, OSError, a driver's), a lookup never sees it
            if server or _busy(e):  # a server that is down (or busy) may be back at the next flush
                self._put_back({(target, *k): v for k, v in counts.items()})
            else:
                self.refused.add(target)
            log.debug("demand: cannot write %d problem(s) into %s: %s", len(rows), db_path(target), e)
            return 0
        return len(rows)

    def at_exit(self) -> None:
        """Write what is left, waiting at most EXIT_SECONDS (a locked database cannot hold an exit up)."""
        self._stop.set()
        if not self._counts:
            return
        last = threading.Thread(target=self.flush, name="tunesvc-demand-exit", daemon=True)
        last.start()
        last.join(EXIT_SECONDS)

    def forked(self) -> None:
        """In a forked child: no counts (the parent writes its own), no thread, fresh locks."""
        self._reset()


def _add(path: str, rows: dict) -> None:
    """Add counts to the demand table of the tuning database at ``path`` (one the lookup has just read).

    Over plain sqlite3 (``Queue.open`` would load sqlite-utils, and with it pandas: an import that
    cannot finish once the interpreter exits), with a short busy timeout: a locked file waits for
    the next flush rather than holding this one."""
    conn = sqlite3.connect(path, timeout=BUSY_SECONDS, check_same_thread=False)
    try:
        with conn:
            migrate_queue(conn)  # IF NOT EXISTS: the demand table of a file no queue has opened yet
        Queue(conn).add_demand(rows)
    finally:
        conn.close()


def _add_server(url: str, rows: dict) -> None:
    """The same into a PostgreSQL server's tuning database (its store made the demand table)."""
    from . import pg_engine

    path = db_path(url)
    queue = Queue(pg_engine.connect(path, readonly=False), pg_engine)
    queue.path = path
    try:
        queue.add_demand(rows)
    finally:
        queue.close()


def _busy(e: Exception) -> bool:
    """Whether a failed write may work later: another writer held the lock (not: the file is read-only)."""
    text = str(e).lower()
    return ("locked" in text or "busy" in text) and "readonly" not in text and "read-only" not in text


BUFFER = Buffer()
atexit.register(BUFFER.at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=BUFFER.forked)


def flush() -> int:
    """Write the demand counted in this process now (a framework about to exit abruptly, a test)."""
    return BUFFER.flush()


# ---- reading it back ---------------------------------------------------------------------
@dataclass(frozen=True)
class Demand:
    """One problem asked for: how often, when first and last, and whether it has been tuned since."""

    template: str
    template_hash: str  # the template's current source hash (older versions' asks are merged into it)
    dtype: str
    shape: str
    device_key: str
    count: int
    first_seen: str
    last_seen: str
    tuned: bool

    @property
    def device_name(self) -> str:
        return self.device_key.split("|")[4] if self.device_key.count("|") == 5 else self.device_key


def listing(db=None, limit: int | None = 50, include_tuned: bool = False) -> list[Demand]:
    """What lookups asked of the database ``db`` and it could not answer exactly, most asked first:
    only problems still without an ok record of the template's current version on the asking
    device, unless ``include_tuned``. Asks made of an older template version count for the current
    one (that is what a tune would measure); a template no longer known keeps its own hash. A
    database that does not exist has no demand."""
    from .store import Store

    path = db_path(db)
    if not is_server_url(path) and not path.exists():
        return []  # nothing asked of a database that is not there (and none is made to say so)
    store = Store(db, readonly=True)  # read-only: listing never writes (a read-only server, a frozen file)
    try:
        queue = Queue(store.conn, store.engine)
        try:
            merged = _merge(queue.demand(untuned_only=False, limit=None))
            tuned = queue.tuned(list(merged))
        except store.engine.errors as e:
            if not store.engine.missing(e):
                raise StoreError(f"cannot read the demand in {str(store.path)!r}: {store.engine.describe(e)}") from None
            return []  # no writer of this version has touched the file: nothing was recorded
    finally:
        store.close()
    out = [Demand(*key, n, first, last, key in tuned) for key, (n, first, last) in merged.items()]
    out = [d for d in out if include_tuned or not d.tuned]
    out.sort(key=lambda d: (d.count, d.last_seen), reverse=True)
    return out if limit is None else out[:limit]


def _merge(rows) -> dict:
    """(template, current hash, dtype, shape, device key) -> (count, first, last), summed over hashes."""
    current: dict = {}
    merged: dict = {}
    for template, template_hash, dtype, shape, device_key, n, first, last in rows:
        if template not in current:
            current[template] = _current_hash(template)
        key = (template, current[template] or template_hash, dtype, shape, device_key)
        have = merged.get(key)
        merged[key] = (n, first, last) if have is None else (have[0] + n, min(have[1], first), max(have[2], last))
    return merged


def _current_hash(template: str) -> str | None:
    from .. import templates

    try:
        return templates.get(template).source_hash
    except Exception:  # a template this version no longer has (or a user's file that moved)
        return None
