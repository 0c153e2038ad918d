"""A fleet on one PostgreSQL server: N workers, M submitted jobs, one worker killed with kill -9
in the middle of a job. Prints a table: every job done exactly once, no record lost, and the
killed worker's job taken again once its lease ran out.

    python benchmarks/fleet.py [--workers 4] [--jobs 20] [--trials 6] [--lease 6]
    python benchmarks/fleet.py --engines [--records 5000]   # the store on each engine: write, export, import

The server is started as tests/pg_helpers.py starts the tests' (Debian's postgresql on loopback in
a temporary folder, fsync off); the jobs tune tests/fault_templates/healthy.py (16 configs that all
build and run) on the default device, at shapes of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
HEALTHY = str(ROOT / "tests" / "fault_templates" / "healthy.py")


def cli(*args) -> str:
    out = subprocess.run([TUNESVC, *map(str, args)], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"tunesvc {' '.join(map(str, args))}: {out.stderr.strip()}")
    return out.stdout


def snapshot(queue) -> dict:
    return {j.id: j for j in queue.jobs()}


def kill_one_mid_job(queue, workers: dict, store) -> tuple:
    """Wait for a job running with at least one stored measurement; kill -9 its worker.
    (job id, kill time, the job's lease_until then)."""
    from tunesvc.types import parse_shape

    while True:
        for job in queue.jobs("running"):
            pid = int(job.worker.split(":")[1])
            done = sum(1 for r in store.records("healthy") if r.shape == parse_shape(job.shape))
            if pid in workers and done >= 1:
                workers[pid].send_signal(signal.SIGKILL)
                return job.id, time.time(), job.lease_until, pid
        time.sleep(0.05)


def watch(queue, victim: int, killed_pid: int, deadline: float) -> float | None:
    """When the killed worker's job is claimed again (by another worker), seen every 0.05 s."""
    while time.time() < deadline:
        job = queue.get(victim)
        if job.worker and f":{killed_pid}:" not in job.worker:
            return time.time()
        time.sleep(0.05)
    return None


def run(n_workers: int, n_jobs: int, trials: int, lease: float) -> None:
    from pg_helpers import Server
    from tunesvc.cache import Store
    from tunesvc.cache.jobs import Queue

    server = Server()
    try:
        url = server.create_database()
        shapes = [str(4096 + 512 * i) for i in range(n_jobs)]
        ids = [json.loads(cli("submit", HEALTHY, "--shape", s, "--trials", trials, "--db", url, "--json"))["job"] for s in shapes]
        started = time.time()
        procs = {}
        for i in range(n_workers):
            p = subprocess.Popen([TUNESVC, "worker", "--db", url, "--lease", str(lease), "--exit-when-idle"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, TUNESVC_PROGRESS_SECONDS="0"))
            procs[p.pid] = p
        queue, store = Queue.open(url), Store(url, readonly=True)
        victim, killed_at, lease_until, killed_pid = kill_one_mid_job(queue, procs, store)
        measured_before_kill = sum(1 for r in store.records("healthy") if r.shape[0] == int(queue.get(victim).shape))
        reclaimed_at = watch(queue, victim, killed_pid, time.time() + 10 * lease + 60)
        outputs = {pid: p.communicate(timeout=1800) for pid, p in procs.items()}
        wall = time.time() - started
        jobs = snapshot(queue)
        records = list(store.records("healthy"))
        queue.close()
        store.close()
        report(ids, jobs, records, outputs, procs, killed_pid, victim, killed_at, lease_until, reclaimed_at, lease,
               trials, measured_before_kill, wall, n_workers)
    finally:
        server.stop()


def report(ids, jobs, records, outputs, procs, killed_pid, victim, killed_at, lease_until, reclaimed_at, lease, trials,
           measured_before_kill, wall, n_workers) -> None:
    done_lines = {i: 0 for i in ids}
    for pid, (_, err) in outputs.items():
        for line in err.splitlines():
            if line.startswith("job ") and line.endswith(": done"):
                done_lines[int(line.split()[1])] += 1
    per_shape = {}
    for r in records:
        per_shape[r.shape[0]] = per_shape.get(r.shape[0], 0) + 1
    print(f"{'job':>4} {'shape':>6} {'state':>6} {'attempts':>8} {'done lines':>10} {'records':>7}  worker")
    for i in ids:
        j = jobs[i]
        mark = "  <- its worker was killed (kill -9)" if i == victim else ""
        print(f"{i:>4} {j.shape:>6} {j.state:>6} {j.attempts:>8} {done_lines[i]:>10} {per_shape.get(int(j.shape), 0):>7}  "
              f"{j.worker.split(':')[1]}{mark}")
    renewed = lease_until - lease  # the killed worker's last renewal of its lease
    print()
    print(f"workers: {n_workers}, one killed (pid {killed_pid}, exit {procs[killed_pid].returncode}); jobs: {len(ids)}; "
          f"trials per job: {trials}; lease: {lease:g} s; wall: {wall:.1f} s")
    print(f"every job done: {all(jobs[i].state == 'done' for i in ids)}; reported done exactly once: "
          f"{all(n == 1 for i, n in done_lines.items() if i != victim)} (the killed worker's job: {done_lines[victim]} line, "
          f"by its second worker); attempts: 1 each but the killed one's {jobs[victim].attempts}")
    print(f"records: {len(records)} stored, every job's at least its {trials} trials: "
          f"{all(per_shape.get(int(jobs[i].shape), 0) >= trials for i in ids)}; the killed job's "
          f"{measured_before_kill} measured before the kill kept: {per_shape.get(int(jobs[victim].shape), 0) >= measured_before_kill}")
    if reclaimed_at is None:
        print("the killed worker's job was never claimed again")
        return
    print(f"killed job reclaimed {reclaimed_at - killed_at:.2f} s after the kill, {reclaimed_at - renewed:.2f} s after its "
          f"last lease renewal (lease {lease:g} s; the lease ran out {lease_until - killed_at:.2f} s after the kill; "
          f"an idle worker looks every 2 s)")


def engines(n_records: int) -> None:
    """put_many, export and import of the same synthetic records on an SQLite file and on the server."""
    from db_helpers import make_records
    from pg_helpers import Server
    from tunesvc.cache import Store
    from tunesvc.cache.exchange import export, import_files
    from tunesvc.types import Fingerprint

    shapes = [(64, 64, 64 * k) for k in range(1, 51)]
    records = [r for d in range(max(1, n_records // 500)) for r in
               make_records(fp=Fingerprint("opencl", "AMD", "cpu", "znver3", f"device {d}", "3.0"), shapes=shapes, n=10)]
    server = Server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pairs = {"SQLite file": (f"{tmp}/a.db", f"{tmp}/b.db"),
                     "PostgreSQL (loopback)": (server.create_database(), server.create_database())}
            print(f"{'engine':<22} {'records':>7} {'put_many s':>10} {'export s':>8} {'import s':>8}")
            for name, (src, dst) in pairs.items():
                store = Store(src)
                t0 = time.perf_counter()
                store.put_many(records)
                t1 = time.perf_counter()
                store.close()
                export(f"{tmp}/out.jsonl", db=src)
                t2 = time.perf_counter()
                import_files([f"{tmp}/out.jsonl"], db=dst, source="peer")
                t3 = time.perf_counter()
                print(f"{name:<22} {len(records):>7} {t1 - t0:>10.2f} {t2 - t1:>8.2f} {t3 - t2:>8.2f}")
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--lease", type=float, default=6.0)
    ap.add_argument("--engines", action="store_true", help="measure the store on each engine instead")
    ap.add_argument("--records", type=int, default=5000)
    args = ap.parse_args()
    if args.engines:
        return engines(args.records)
    with tempfile.TemporaryDirectory(prefix="tunesvc-fleet-") as tmp:
        os.environ.setdefault("TUNESVC_CACHE_DIR", str(Path(tmp) / "cache"))  # the template's name, remembered here
        run(args.workers, args.jobs, args.trials, args.lease)


if __name__ == "__main__":
    main()
