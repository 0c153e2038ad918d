"""Tuning jobs: submitted, claimed atomically by workers whose device serves them, leased,
reclaimed after a kill -9, handed back on SIGTERM. Real worker processes, a real database: an
SQLite file, and a real PostgreSQL server's database (the session's, tests/pg_helpers.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesvc.cache import Store
from tunesvc.cache.jobs import Queue

TUNESVC = str(Path(sys.executable).with_name("tunesvc"))


def cli(*args, timeout=300):
    return subprocess.run([TUNESVC, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_db(request, tmp_path):
    """A fresh tuning database of each engine: a file path, or a PostgreSQL URL."""
    return str(tmp_path / "t.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def jobs(db):
    out = cli("jobs", "--db", db, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["jobs"]


def start_worker(db, device, *extra):
    return subprocess.Popen([TUNESVC, "worker", "--device", device, "--db", str(db), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_running(db, job_id, timeout=300):
    """Until the job is running and its worker has stored a measurement (progress is written only
    with a lease renewal, so it is not waited for)."""
    q = Queue.open(db)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            j = q.get(job_id)
            if j.state == "running" and q.conn.execute("SELECT count(*) FROM measurements").fetchone()[0] > 0:
                return j
            assert j.state in ("pending", "running"), f"job {job_id} is {j.state} before it was seen running"
            time.sleep(0.1)
    finally:
        q.close()
    raise AssertionError(f"job {job_id} never ran")


def test_submit_is_checked_and_not_queued_twice(queue_db):
    db = queue_db
    first = cli("submit", "reduce_sum", "--shape", "4x256", "--trials", "2", "--db", db, "--json")
    assert first.returncode == 0, first.stderr
    again = cli("submit", "reduce_sum", "--shape", "4x256", "--trials", "2", "--db", db, "--json")
    assert json.loads(again.stdout)["job"] == json.loads(first.stdout)["job"]
    for args, says in ((["nosuch"], "unknown template"), (["matmul", "--shape", "8x8"], "dimension"),
                       (["matmul", "--trials", "0"], "--trials")):
        bad = cli("submit", *args, "--db", db)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert [j["state"] for j in jobs(db)] == ["pending"]


def test_a_worker_runs_what_its_device_serves_and_leaves_the_rest(queue_db, cl_info):
    db = queue_db
    for shape in ("4x256", "8x512"):
        assert cli("submit", "reduce_sum", "--shape", shape, "--trials", "2", "--db", db).returncode == 0
    assert cli("submit", "reduce_sum", "--shape", "4x1024", "--device-family", "a100", "--db", db).returncode == 0
    out = cli("worker", "--device", cl_info.id, "--db", db, "--exit-when-idle")
    assert out.returncode == 0, out.stderr
    states = {j["shape"]: j["state"] for j in jobs(db)}
    assert states == {"4x256": "done", "8x512": "done", "4x1024": "pending"}
    store = Store(db, readonly=True)
    tuned = {r.shape for r in store.records("reduce_sum", None, "ok")}
    store.close()
    assert tuned == {(4, 256), (8, 512)}


def test_a_worker_tunes_with_the_strategy_it_is_given_and_refuses_bad_settings(tmp_path, cl_info):
    import optuna

    db = str(tmp_path / "t.db")
    assert cli("submit", "reduce_sum", "--shape", "4x256", "--trials", "2", "--db", db).returncode == 0
    for args, says in ((["--strategy-option", "polish=1.5"], "setting 'polish' must be"),
                       (["--strategy", "grid", "--strategy-option", "start=1"], "has no setting 'start'")):
        bad = cli("worker", "--device", cl_info.id, "--db", db, "--exit-when-idle", *args)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert [j["state"] for j in jobs(db)] == ["pending"]  # refused before the job was claimed
    out = cli("worker", "--device", cl_info.id, "--db", db, "--exit-when-idle", "--strategy", "local",
              "--strategy-option", "explore=0.5")
    assert out.returncode == 0, out.stderr
    assert [j["state"] for j in jobs(db)] == ["done"]
    studies = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 't.optuna.db'}")
    assert {s.user_attrs["strategy"] for s in studies} == {"local"}


def test_a_killed_workers_job_is_taken_again_after_its_lease(queue_db, cl_info):
    db, lease = queue_db, 3.0
    out = cli("submit", "matmul", "--shape", "32x32x32", "--trials", "60", "--db", db, "--json")
    job_id = json.loads(out.stdout)["job"]
    first = start_worker(db, cl_info.id, "--lease", lease)
    try:
        wait_running(db, job_id)
    finally:
        first.kill()  # kill -9: no chance to hand the job back
        first.communicate()
    killed_at = time.time()
    second = cli("worker", "--device", cl_info.id, "--db", db, "--lease", lease, "--exit-when-idle")
    assert second.returncode == 0, second.stderr
    [job] = jobs(db)
    assert job["state"] == "done" and job["attempts"] == 2
    assert job["started_at"] and time.time() - killed_at >= lease * 0.5  # it waited for the lease


def test_sigterm_finishes_the_trial_hands_the_job_back_and_exits_0(queue_db, cl_info):
    db = queue_db
    out = cli("submit", "matmul", "--shape", "32x32x32", "--trials", "400", "--db", db, "--json")
    job_id = json.loads(out.stdout)["job"]
    w = start_worker(db, cl_info.id)
    try:
        wait_running(db, job_id)
        w.send_signal(signal.SIGTERM)
        _, err = w.communicate(timeout=120)
    finally:
        if w.poll() is None:
            w.kill()
            w.communicate()
    assert w.returncode == 0, err
    [job] = jobs(db)
    assert job["state"] == "pending" and job["worker"] is None and "trials" in job["progress"]
    store = Store(db, readonly=True)
    kept = store.count()
    store.close()
    assert kept >= 1  # every trial measured before the stop is stored
    assert "://" in db or os.path.exists(db)
