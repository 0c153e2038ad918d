"""Candidates built and run in a worker process, so one bad config costs one record, not the tuner.

A ``Worker`` is a long-lived child process (a fresh interpreter: forking after
an OpenCL driver has started is unsafe) that opens the device once and evaluates
configs sent over a pipe. The parent waits on the pipe and on the process's
sentinel together, with a deadline, so it never spins:

* no answer before the deadline -> the worker is killed, the config is a ``timeout``;
* the process dies (SIGSEGV from an out-of-bounds write, SIGKILL from the
  OOM killer, ...) -> ``crash``;
* launch failures, allocation failures -> ``launch``; wrong outputs ->
  ``wrong_result``; compile errors -> ``build`` (reported by the evaluator).

A dead or killed worker is replaced on the next config. The deadline is per
phase: building, then verifying and timing, each get ``timeout`` seconds.

``Builder`` processes compile configs that are coming up next while the
device times the current one; they exist to fill the driver's on-disk
program cache (PoCL's ~/.cache/pocl, pyopencl's binary cache), so the
worker's own build of that config is a cache hit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Sequence

from ..errors import BackendError, CandidateError
from .evaluator import Method
from ..types import Config, DeviceInfo, Measurement

STARTUP_TIMEOUT = 120.0  # seconds for a fresh worker to import, open the device and say ready
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to set itself up: picklable, no driver handles."""

    template: str  # tunesvc.templates.ref of the template
    shape: tuple[int, ...]
    dtype: str
    device: DeviceInfo
    method: Method = Method()
    seed: int = 0


# ---- inside the child -----------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL us when the parent dies (kill -9 of the tuner must not leave a
    worker spinning in a hung kernel); elsewhere the closed pipe ends an idle worker."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _setup(job: Job):
    from .. import templates
    from ..devices import open_device
    from .evaluator import Evaluator

    tpl = templates.load(job.template)
    return Evaluator(open_device(job.device), tpl, job.shape, job.dtype, job.method, seed=job.seed)


def _handle(evaluator, conn, msg) -> None:
    kind, payload = msg
    if kind == "eval":
        config, best = payload  # best: the best time so far, against which a hopeless config is abandoned
        try:
            m = evaluator.evaluate(config, on_built=lambda s: conn.send(("built", s)), best=best)
        except MemoryError as e:  # the host ran out while preparing this config
            m = Measurement(config, "launch", f"out of memory: {e}")
        except Exception as e:  # a template bug for this config: record it, keep serving
            m = Measurement(config, "runtime", f"{type(e).__name__}: {e}")
        conn.send(("done", m))
    elif kind == "compare":
        conn.send(("done", evaluator.compare(payload)))
    elif kind == "build":
        tpl, plan = evaluator.template, evaluator.template.plan(payload, evaluator.shape, evaluator.dtype)
        try:
            program = evaluator.device.build(evaluator.source, plan.defines, tpl.kernel_names)
            conn.send(("done", program.build_seconds))
        except CandidateError as e:
            conn.send(("done", str(e)))


def serve(conn, parent: int) -> None:
    """The worker's main loop: set up once, then answer one message at a time until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    _die_with_parent(parent)
    try:
        job = conn.recv()
        evaluator = _setup(job)
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        try:
            _handle(evaluator, conn, msg)
        except (BrokenPipeError, OSError):
            return
        except Exception:
            conn.send(("error", traceback.format_exc(limit=3)))


# ---- in the parent --------------------------------------------------------------------------
class _Died(Exception):
    def __init__(self, exitcode):
        self.exitcode = exitcode


class Process:
    """One child running ``serve``, and a deadline-bounded way to hear from it.

    Started as ``python -m tunesvc.measure.worker`` with one end of a socket pair rather than by
    multiprocessing's spawn, which re-imports the caller's main script in the child (a
    script calling tune() without a ``__main__`` guard would recurse). The socket also
    tells the parent when the child dies: its end reads EOF.
    """

    def __init__(self, job: Job):
        self.job = job
        mine, theirs = socket.socketpair()
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding tunesvc/
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tunesvc.measure.worker", str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(mine.detach())
        self.conn.send(job)
        kind, payload = self.receive(STARTUP_TIMEOUT, "starting")
        if kind != "ready":
            self.kill()
            raise BackendError(f"worker could not start: {payload}")
        self.pid = payload

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, kind: str, payload) -> None:
        self.conn.send((kind, payload))

    def receive(self, timeout: float | None, phase: str):
        """The next message; TimeoutError after ``timeout`` s, _Died if the process ended."""
        if not wait([self.conn], timeout):
            raise TimeoutError(phase)
        try:
            return self.conn.recv()
        except (EOFError, OSError):  # the child is gone: its end of the socket closed
            raise _Died(self._reap()) from None

    def _reap(self, timeout: float = STOP_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()

    def stop(self) -> None:
        """Ask politely, then kill: a worker stuck in a kernel cannot hear the request."""
        if self.proc.poll() is None:
            try:
                self.send("stop", None)
                self.proc.wait(1.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


def describe_exit(exitcode) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"worker killed by signal {-exitcode}"
    return f"worker exited with code {exitcode}"


class Worker:
    """Evaluates configs in a child process, replacing it after a crash or a timeout."""

    def __init__(self, job: Job, timeout: float | None = 60.0):
        self.job = job
        self.timeout = timeout
        self._proc: Process | None = None
        self.replaced = 0  # how many workers were lost to crashes and timeouts

    def _process(self) -> Process:
        if self._proc is None or not self._proc.alive:
            if self._proc is not None:
                self._proc.kill()
            self._proc = Process(self.job)
        return self._proc

    def _lose(self) -> None:
        assert self._proc is not None  # lost only after _process started one
        self._proc.kill()
        self._proc = None
        self.replaced += 1

    def evaluate(self, config: Config, best: float | None = None) -> Measurement:
        """Evaluate in the worker; ``best`` (the best time so far) lets it abandon a hopeless config."""
        proc = self._process()
        proc.send("eval", (config, best))
        phase, compile_seconds = "building", 0.0
        try:
            while True:
                kind, payload = proc.receive(self.timeout, phase)
                if kind == "built":
                    phase, compile_seconds = "running", payload
                elif kind == "done":
                    return payload
                else:
                    raise BackendError(f"worker failed: {payload}")
        except TimeoutError:
            self._lose()
            return Measurement(config, "timeout", f"no result after {self.timeout:g} s while {phase}; worker killed",
                               compile_seconds=compile_seconds)
        except _Died as died:
            self._lose()
            return Measurement(config, "crash", f"{describe_exit(died.exitcode)} while {phase}", compile_seconds=compile_seconds)

    def compare(self, configs: Sequence[Config]) -> list[Measurement]:
        """Interleaved re-measurement of configs that ran before (see Evaluator.compare)."""
        proc = self._process()
        proc.send("compare", list(configs))
        limit = None if self.timeout is None else self.timeout * (1 + len(configs))
        try:
            kind, payload = proc.receive(limit, "comparing")
        except (TimeoutError, _Died) as e:
            self._lose()
            reason = describe_exit(e.exitcode) if isinstance(e, _Died) else f"no result after {limit:g} s"
            return [Measurement(c, "crash" if isinstance(e, _Died) else "timeout", reason + " while comparing") for c in configs]
        if kind != "done":
            raise BackendError(f"worker failed: {payload}")
        return payload

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None


class Builders:
    """Processes that compile upcoming configs ahead of time, to warm the driver's program cache.

    ``prefetch(configs)`` hands each idle builder one config that no builder has
    had yet and returns at once; the builders' results are never needed (a
    failed build fails again, quickly, in the worker), so they are collected
    only to learn which builders are idle again.
    """

    def __init__(self, job: Job, count: int, timeout: float | None = 60.0):
        self.job = job
        self.count = count
        self.timeout = timeout
        self._procs: list[Process] = []
        self._busy: dict[int, float] = {}  # index -> deadline (monotonic)
        self._given: set[str] = set()

    def _collect(self) -> None:
        import time

        for i in list(self._busy):
            p = self._procs[i]
            try:
                if p.conn.poll(0):
                    p.conn.recv()
                    del self._busy[i]
                    continue
            except (EOFError, OSError):
                pass
            if not p.alive or time.monotonic() > self._busy[i]:
                p.kill()  # a hung or dead compile: start a fresh builder
                self._procs[i] = Process(self.job)
                del self._busy[i]

    def prefetch(self, configs: Sequence[Config]) -> int:
        """Start building configs not given before on idle builders; return how many started."""
        import time

        if not self._procs:
            self._procs = [Process(self.job) for _ in range(self.count)]
        self._collect()
        started = 0
        idle = [i for i in range(len(self._procs)) if i not in self._busy]
        for c in configs:
            if not idle:
                break
            if c.key in self._given:
                continue
            i = idle.pop()
            self._given.add(c.key)
            self._procs[i].send("build", c)
            self._busy[i] = time.monotonic() + (self.timeout or STARTUP_TIMEOUT)
            started += 1
        return started

    def close(self) -> None:
        for p in self._procs:
            p.stop()
        self._procs = []
        self._busy = {}


if __name__ == "__main__":  # python -m tunesvc.measure.worker FD PARENT_PID
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
