"""The job queue and the demand log, in the tuning database beside the measurements.

A *job* is a problem to tune (template, shape, dtype, optionally a device family) with its
budget. Workers claim one at a time, atomically (``BEGIN IMMEDIATE`` on SQLite: one writer
at a time; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: one row lock per claim; so two workers can
never take the same job), and hold a *lease* they renew while
they work; a job whose lease ran out (its worker was killed) is pending again for the next
claim. *Demand* counts the lookups that were answered below ``exact``: what frameworks asked
for and nobody tuned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import StoreError, UsageError
from .schema import DEMAND, DEMAND_KEY, JOB_COLUMNS, JOBS, STATES, migrate_queue as migrate


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Job:
    id: int
    template: str
    shape: str
    dtype: str
    device_family: str
    trials: int | None
    time_budget: float | None
    state: str
    worker: str | None
    lease_until: float | None
    progress: str
    reason: str
    attempts: int
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    device_key: str | None


#: a job a claim may take: pending, or running on a lease that ran out (its worker died)
_CLAIMABLE = "state = 'pending' OR (state = 'running' AND lease_until < ?)"


def _serves(family: str, device_key: str, names: tuple[str, ...]) -> bool:
    """Whether a worker's device (its key and normalised names) matches a job's device family:
    any device for '', else a case-insensitive part of the key or one of the names."""
    want = family.strip().lower()
    return not want or want in device_key.lower() or any(want == n or want in n for n in names)


class Queue:
    """Jobs and demand in one tuning database (an SQLite file or a PostgreSQL server's database),
    over a connection of the queue's own (a worker's lease renewer opens a second one: connections
    are not shared between threads). A claim is atomic on both: ``BEGIN IMMEDIATE`` on SQLite (one
    writer at a time), ``SELECT ... FOR UPDATE SKIP LOCKED`` of the one row on PostgreSQL (workers
    claiming at once each lock a different job, none waits)."""

    def __init__(self, conn, engine=None):
        from . import sqlite_engine

        self.conn, self.engine = conn, engine or sqlite_engine
        self.path = None

    @classmethod
    def open(cls, db=None) -> "Queue":
        """The queue of the tuning database ``db`` (the default one for None), its tables made."""
        from .store import Store

        store = Store(db)  # a tuning database (made, or migrated, here), never some other file
        queue = cls(store.conn, store.engine)
        queue.path = store.path
        try:
            if store.engine.dialect == "sqlite":  # PostgreSQL's store made the queue's tables with the rest
                queue._write(lambda: migrate(queue.conn))
        except StoreError:
            queue.close()
            raise
        return queue

    def close(self) -> None:
        try:
            self.conn.close()
        except self.engine.errors:  # a connection the server dropped is closed anyway
            pass

    def _error(self, e: Exception) -> StoreError:
        return StoreError(f"cannot use the job queue in {str(self.path)!r}: {self.engine.describe(e)}; "
                          "check the database, or pass another --db")

    def _read(self, sql: str, args=()) -> list:
        """The rows of one query; a failure (a lost server) is a one-line StoreError."""
        try:
            return self.conn.execute(sql, args).fetchall()
        except self.engine.errors as e:
            raise self._error(e) from None

    def _write(self, fn, attempts: int = 20):
        """Run ``fn`` in one IMMEDIATE transaction, retried while another writer holds the lock
        (or, on PostgreSQL, deadlocked it)."""
        for attempt in range(attempts):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except self.engine.errors as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise self._error(e) from None
                if attempt == attempts - 1:
                    raise StoreError(f"the job queue is busy: {self.engine.describe(e)}") from None
                time.sleep(0.05 * (attempt + 1))
                continue
            try:
                out = fn()
                self.conn.commit()
            except self.engine.errors as e:
                self._rollback()
                if not self.engine.transient(e) or attempt == attempts - 1:
                    raise self._error(e) from None
                time.sleep(0.05 * (attempt + 1))
                continue
            except BaseException:
                self._rollback()
                raise
            return out
        raise StoreError("the job queue stayed busy")

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except self.engine.errors:  # a lost connection has no transaction left to roll back
            pass

    # ---- submitting and listing ------------------------------------------------------------
    def submit(self, template: str, shape: str, dtype: str, device_family: str = "", trials: int | None = None,
               time_budget: float | None = None) -> int:
        """Queue one job; its id. The same pending or running problem is not queued twice."""
        def add():
            row = self.conn.execute(f"SELECT id FROM {JOBS} WHERE template = ? AND shape = ? AND dtype = ? AND device_family = ? "
                                    "AND state IN ('pending', 'running')", (template, shape, dtype, device_family)).fetchone()
            if row:
                return row[0]
            cur = self.conn.execute(f"INSERT INTO {JOBS} (template, shape, dtype, device_family, trials, time_budget, submitted_at) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                                    (template, shape, dtype, device_family, trials, time_budget, _now()))
            return cur.fetchone()[0]

        return self._write(add)

    def jobs(self, state: str | None = None) -> list[Job]:
        if state is not None and state not in STATES:
            raise UsageError(f"unknown job state {state!r}; use one of {', '.join(STATES)}")
        sql = f"SELECT {', '.join(JOB_COLUMNS)} FROM {JOBS}" + (" WHERE state = ?" if state else "") + " ORDER BY id"
        return [Job(*row) for row in self._read(sql, (state,) if state else ())]

    # ---- a worker's side -------------------------------------------------------------------
    def claim(self, worker: str, device_key: str, names: tuple[str, ...], lease: float) -> Job | None:
        """The oldest job this device can serve that is pending, or running on a lease that ran
        out, now running on ``worker`` with a fresh lease; None when there is none."""
        def take():
            now = time.time()
            rows = self.conn.execute(f"SELECT id, device_family FROM {JOBS} WHERE {_CLAIMABLE} ORDER BY id", (now,)).fetchall()
            for job_id, family in rows:
                if not _serves(family, device_key, names):
                    continue
                # PostgreSQL: lock this one row, or pass it by while another worker's claim holds it
                if self.engine.skip_locked and not self.conn.execute(
                        f"SELECT id FROM {JOBS} WHERE id = ? AND ({_CLAIMABLE}){self.engine.skip_locked}", (job_id, now)).fetchone():
                    continue
                self.conn.execute(f"UPDATE {JOBS} SET state = 'running', worker = ?, lease_until = ?, attempts = attempts + 1, "
                                  "started_at = ?, device_key = ?, progress = '' WHERE id = ?",
                                  (worker, now + lease, _now(), device_key, job_id))
                return job_id
            return None

        job_id = self._write(take)
        return None if job_id is None else self.get(job_id)

    def open_for(self, device_key: str, names: tuple[str, ...]) -> int:
        """How many jobs this device could serve are pending or running (a running one may come
        back when its worker dies): a worker that would exit when idle waits while any is."""
        rows = self._read(f"SELECT device_family FROM {JOBS} WHERE state IN ('pending', 'running')")
        return sum(_serves(family, device_key, names) for (family,) in rows)

    def get(self, job_id: int) -> Job | None:
        rows = self._read(f"SELECT {', '.join(JOB_COLUMNS)} FROM {JOBS} WHERE id = ?", (job_id,))
        return Job(*rows[0]) if rows else None

    def renew(self, job_id: int, worker: str, lease: float, progress: str = "") -> bool:
        """Extend the lease and say how far the work is; False if the job is no longer this worker's."""
        def extend():
            cur = self.conn.execute(f"UPDATE {JOBS} SET lease_until = ?, progress = ? WHERE id = ? AND worker = ? "
                                    "AND state = 'running'", (time.time() + lease, progress, job_id, worker))
            return cur.rowcount == 1

        return self._write(extend)

    def finish(self, job_id: int, worker: str, state: str, reason: str = "", progress: str = "") -> bool:
        """Mark a job done or failed (``state``), or pending again (released); False if it was not this worker's."""
        def end():
            if state == "pending":
                sql = f"UPDATE {JOBS} SET state = 'pending', worker = NULL, lease_until = NULL, progress = ? WHERE id = ? AND worker = ?"
                return self.conn.execute(sql, (progress, job_id, worker)).rowcount == 1
            sql = (f"UPDATE {JOBS} SET state = ?, reason = ?, progress = ?, finished_at = ?, lease_until = NULL "
                   "WHERE id = ? AND worker = ? AND state = 'running'")
            return self.conn.execute(sql, (state, reason[:2000], progress, _now(), job_id, worker)).rowcount == 1

        return self._write(end)

    # ---- demand ----------------------------------------------------------------------------
    def add_demand(self, counts: dict[tuple, tuple[int, str, str]]) -> None:
        """Add buffered misses: (template, hash, dtype, shape, device_key) -> (count, first, last seen)."""
        def add():
            self.conn.executemany(
                f"INSERT INTO {DEMAND} ({', '.join(DEMAND_KEY)}, count, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                f"ON CONFLICT ({', '.join(DEMAND_KEY)}) DO UPDATE SET count = {DEMAND}.count + excluded.count, "
                f"last_seen = max({DEMAND}.last_seen, excluded.last_seen), first_seen = min({DEMAND}.first_seen, excluded.first_seen)",
                [(*key, n, first, last) for key, (n, first, last) in counts.items()])

        self._write(add)

    def demand(self, untuned_only: bool = True, limit: int | None = 50) -> list[tuple]:
        """(template, hash, dtype, shape, device_key, count, first_seen, last_seen), most asked first;
        with ``untuned_only``, only problems with no ok record on that device; every row for a None limit."""
        cond = ("WHERE NOT EXISTS (SELECT 1 FROM record_shapes r WHERE r.template = d.template AND "
                "r.template_hash = d.template_hash AND r.dtype = d.dtype AND r.shape = d.shape AND "
                "r.device_key = d.device_key)") if untuned_only else ""
        sql = (f"SELECT {', '.join('d.' + c for c in DEMAND_KEY)}, d.count, d.first_seen, d.last_seen FROM {DEMAND} d "
               f"{cond} ORDER BY d.count DESC, d.last_seen DESC" + (" LIMIT ?" if limit is not None else ""))
        return self.conn.execute(sql, (limit,) if limit is not None else ()).fetchall()

    def tuned(self, keys: list[tuple]) -> set[tuple]:
        """Those of these (template, hash, dtype, shape, device_key) with an ok record (one point query each)."""
        sql = ("SELECT 1 FROM record_shapes WHERE template = ? AND template_hash = ? AND dtype = ? AND shape = ? "
               "AND device_key = ?")
        return {key for key in keys if self.conn.execute(sql, key).fetchone()}
