"""Tuning jobs: submitted by people or by demand, run by workers that claim what their device serves.

A worker claims one job at a time (:meth:`~tunesvc.cache.jobs.Queue.claim`), tunes it with
:func:`~tunesvc.tuning.tuner.tune` into the same database, and marks it done or failed. While
it works, a thread renews its lease every third of the lease with the progress so far; a
worker killed outright loses its job only until the lease runs out, and the next claim takes
it. SIGTERM (or SIGINT) lets the trial in flight finish, hands the job back, and exits. The queue
is the tuning database's, on a file or on a PostgreSQL server (``--db postgresql://...``): machines
that share a server share its queue.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable

from ..cache.jobs import Job, Queue
from ..errors import StoreError, TunesvcError, UsageError
from ..identity import normalise_name
from ..types import DeviceInfo

log = logging.getLogger(__name__)
DEFAULT_LEASE = 60.0


class Stopped(Exception):
    """The worker was asked to stop: raised from the trial callback, after the trial in flight."""


def device_names(info: DeviceInfo) -> tuple[str, ...]:
    """What a job's --device-family may name: the normalised name, architecture, vendor, type."""
    fp = info.fingerprint
    return tuple(n.lower() for n in (normalise_name(fp.name), fp.architecture, fp.vendor, fp.device_type) if n)


def submit(template: str, shape=None, dtype: str = "float32", device_family: str = "", db=None,
           trials: int | None = None, time_budget: float | None = None) -> int:
    """Queue a tuning job, checked as ``tune`` would check it (a template that exists, a shape it
    takes, a known dtype); its id. A problem pending or running already is not queued again."""
    from .. import templates
    from ..types import shape_str
    from .options import StopRules

    tpl = templates.get(template)
    shape = tpl.parse_shape(shape) if shape is not None else tuple(tpl.default_shape)
    tpl.check_dtype(dtype)
    StopRules(trials=trials, time_budget=time_budget)
    queue = Queue.open(db)
    try:
        return queue.submit(tpl.name, shape_str(shape), dtype, device_family, trials, time_budget)
    finally:
        queue.close()


@dataclass
class WorkSummary:
    done: list = field(default_factory=list)  # job ids
    failed: list = field(default_factory=list)
    released: list = field(default_factory=list)  # handed back on a stop
    stopped: str = ""


class _Lease(threading.Thread):
    """Renews one job's lease until told to stop; notices when the job was taken away."""

    def __init__(self, db, job: Job, worker: str, lease: float):
        super().__init__(daemon=True)
        self.db, self.job, self.worker, self.lease = db, job, worker, lease
        self.progress, self.lost = "", False
        self._stop_event = threading.Event()

    def run(self) -> None:
        queue = None
        try:
            while not self._stop_event.wait(self.lease / 3):
                try:
                    queue = queue or Queue.open(self.db)
                    if not queue.renew(self.job.id, self.worker, self.lease, self.progress):
                        self.lost = True
                        return
                except StoreError as e:  # a server restarting, a file locked too long: try again next time
                    log.warning("job %d: cannot renew its lease (%s); trying again", self.job.id, e)
                    if queue is not None:
                        queue.close()
                    queue = None
        finally:
            if queue is not None:
                queue.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _tune_job(job: Job, info: DeviceInfo, db, lease: _Lease, stop: threading.Event, options: dict) -> str:
    """Tune one claimed job; "" when it ran correctly, else why it failed. Stopped on a stop request."""
    from .tuner import tune

    def trial(ev) -> None:
        best = f"; best {ev.best.gflops:.1f} GFLOP/s" if ev.best is not None and ev.best.gflops else ""
        lease.progress = f"{ev.index} trials{best}"
        if stop.is_set() or lease.lost:
            raise Stopped()

    limits = {k: v for k, v in (("trials", job.trials), ("time_budget", job.time_budget)) if v is not None}
    result = tune(job.template, job.shape, job.dtype, info, db=db, on_trial=trial, **{**options, **limits})
    return "" if result.ok else result.failure()


def work(device=None, db=None, lease: float = DEFAULT_LEASE, exit_when_idle: bool = False, poll: float = 2.0,
         stop: threading.Event | None = None, on_job: Callable[[Job, str], None] | None = None, **options) -> WorkSummary:
    """Claim and tune jobs this device can serve until stopped (or, ``exit_when_idle``, until none
    is pending or running: a running one comes back when its worker dies and its lease runs out).
    ``options`` are tune's (``trials``, ``time_budget``, ...), a job's own budget first."""
    from ..devices import select_device

    if not lease > 0:
        raise UsageError("--lease must be a positive number of seconds")
    from .options import from_keywords

    from_keywords(**options)  # the strategy, its settings, the limits: refused now, not at the first job
    info = select_device(device)
    stop = stop or threading.Event()
    name = f"{socket.gethostname()}:{os.getpid()}:{info.id}"
    queue, summary = Queue.open(db), WorkSummary()
    try:
        while not stop.is_set():
            job = queue.claim(name, info.fingerprint.key, device_names(info), lease)
            if job is None:
                if exit_when_idle and not queue.open_for(info.fingerprint.key, device_names(info)):
                    summary.stopped = "no job left"
                    break
                stop.wait(poll)
                continue
            _run_one(queue, job, info, db, name, lease, stop, options, summary, on_job)
    finally:
        queue.close()
    summary.stopped = summary.stopped or "stopped"
    return summary


def _run_one(queue: Queue, job: Job, info, db, name: str, lease: float, stop, options, summary: WorkSummary, on_job) -> None:
    log.info("job %d: tuning %s %s %s on %s", job.id, job.template, job.shape, job.dtype, info.id)
    renewer = _Lease(db, job, name, lease)
    renewer.start()
    try:
        reason = _tune_job(job, info, db, renewer, stop, options)
    except Stopped:
        renewer.stop()
        if not renewer.lost:
            queue.finish(job.id, name, "pending", progress=renewer.progress)
            summary.released.append(job.id)
        return
    except TunesvcError as e:  # a job the device cannot serve after all (a shape too large, no fp16, ...)
        reason = str(e)
    renewer.stop()
    state = "failed" if reason else "done"
    if queue.finish(job.id, name, state, reason, renewer.progress):
        (summary.failed if reason else summary.done).append(job.id)
    if on_job:
        on_job(job, state)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the trial in flight finishes, the job is handed back."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
