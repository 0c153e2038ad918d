"""Demand: the lookups answered below ``exact``, counted in memory and written in the background.

A lookup that misses gets the problem's *tally* from :meth:`Buffer.tally` once, when it resolves
the problem, keeps it in its memo, and counts each ask, warm ones included, with
``tally.append(1)``: no lock, no clock, no dict. A daemon thread writes the counts into the
database the lookup read (its demand table, ``Queue.add_demand``: one transaction per database)
every :data:`FLUSH_SECONDS`, and again at interpreter exit (at most :data:`EXIT_SECONDS`). A
write that fails (a read-only file, a locked or damaged database, a server that is down) is
logged at debug and never reaches the lookup: busy files and servers are tried again at the next
flush, the other files dropped for the rest of the process. A database file that does not exist
is never made for demand (a lookup never creates one). A forked child keeps the tallies (its
memo holds them) but empties them: the parent writes its own counts, the child's writer thread
writes the child's.

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
MAX_KEYS = 100_000  # distinct problems counted in one process; beyond, new ones are not


_clock = time.time


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class Buffer:
    """Counts of missed problems, per database, until the next write.

    A key is ``(database path or server URL, template, template hash, dtype, shape text, device
    key)``; its *tally* is a bytearray that gains one byte per ask (``tally.append(1)``: one call in
    C, atomic under the GIL, so threads lose no ask and take no lock) and that a flush empties of
    the bytes it counted."""

    def __init__(self, interval: float = FLUSH_SECONDS):
        self.interval = interval
        self._reset()

    def _reset(self) -> None:
        self._cells: dict = {}  # key -> (tally, first seen (time.time())), for the life of the process
        self._retry: dict = {}  # key -> [count, first, last] a busy database did not take yet
        self._lock = threading.Lock()  # guards the two dicts' membership (never held by a warm ask)
        self._flushing = threading.Lock()  # one write at a time (the thread's and the exit's)
        self._starting = threading.Lock()  # never the one a flush holds: a miss must not wait for a write
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.refused: set = set()  # databases that refused a write (read-only, damaged): not tried again

    def tally(self, key: tuple) -> bytearray | None:
        """The tally of ``key``, made on its first miss (which starts the writer thread); None once
        MAX_KEYS problems have one (more are not counted)."""
        cell = self._cells.get(key)
        if cell is None:
            with self._lock:
                cell = self._cells.get(key)
                if cell is None:
                    if len(self._cells) >= MAX_KEYS:
                        return None
                    cell = self._cells[key] = (bytearray(), _clock())
            if self._thread is None:
                self._start()
        return cell[0]

    def add(self, key: tuple) -> None:
        """Count one miss of ``key`` (the lookup keeps the tally and appends to it itself)."""
        tally = self.tally(key)
        if tally is not None:
            tally.append(1)

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
        return sum(1 for tally, _ in list(self._cells.values()) if tally) + len(self._retry)

    def take(self) -> dict:
        """The counts so far, handed over: key -> [count, first seen, last seen]; last seen is now
        (the asks were made since the last flush)."""
        now = _clock()
        with self._lock:
            cells = list(self._cells.items())
            counts, self._retry = self._retry, {}
        for key, (tally, first) in cells:
            n = len(tally)
            if n:
                del tally[:n]  # atomic too: an ask appended meanwhile stays for the next flush
                have = counts.get(key)
                counts[key] = [n, first, now] if have is None else [have[0] + n, min(have[1], first), now]
        return counts

    def _put_back(self, counts: dict) -> None:
        with self._lock:
            for key, (n, first, last) in counts.items():
                have = self._retry.get(key)
                self._retry[key] = [n, first, last] if have is None else [have[0] + n, min(have[1], first), max(have[2], last)]

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
        if not self.pending():
            return
        last = threading.Thread(target=self.flush, name="tunesvc-demand-exit", daemon=True)
        last.start()
        last.join(EXIT_SECONDS)

    def forked(self) -> None:
        """In a forked child: the parent's counts are the parent's to write, so its tallies start empty
        (the same objects: the child's memo holds them), with fresh locks and a writer of its own."""
        cells = self._cells
        self._reset()
        for tally, _ in cells.values():
            del tally[:]
        self._cells = cells
        if cells:
            self._start()


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
    if isinstance(path, Path) and not path.exists():
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
    out = [Demand(t, h, dtype, shape, device, n, first, last, (t, h, dtype, shape, device) in tuned)
           for (t, h, dtype, shape, device), (n, first, last) in merged.items()]
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
