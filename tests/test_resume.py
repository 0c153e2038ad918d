"""Resume: a real ``tunesvc tune`` process is killed (SIGKILL) or interrupted (SIGINT) mid-run,
then run again with the same command. Configs measured before are never run again, the
tuning database and the Optuna study are intact, and no worker process is left behind.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
# A quick, all-healthy template: this tests the tuner's machinery, not a kernel. The shape makes a
# trial take long enough (~0.5 s) to be stopped in the middle of a run.
HEALTHY = str(Path(__file__).parent / "fault_templates" / "healthy.py")
SHAPE = "1048576"


def tune_cmd(db: Path, trials: int) -> list[str]:
    return [TUNESVC, "tune", HEALTHY, "--shape", SHAPE, "--strategy", "tpe", "--seed", "7",
            "--trials", str(trials), "--db", str(db), "--json"]


def rows(db: Path) -> dict[str, tuple]:
    """config -> the whole stored row, read the way a lookup reads (read-only)."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0]: r for r in conn.execute("SELECT config, * FROM measurements")}
    except sqlite3.OperationalError:  # no table yet
        return {}
    finally:
        conn.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def workers_of(pid: int) -> list[int]:
    """Live worker processes started by ``pid`` (its pid is on their command line)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"tunesvc.measure.worker" in argv and str(pid).encode() in argv and state != "Z":
            found.append(int(d.name))
    return found


def stop_midway(db: Path, sig: int, at_least: int = 2) -> tuple[subprocess.CompletedProcess, int]:
    """Start a long tuning run, wait until ``at_least`` configs are stored, send ``sig``."""
    proc = subprocess.Popen(tune_cmd(db, 16), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(rows(db)) < at_least:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the tuning run stored nothing in 120 s"
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def resume_and_check(db: Path, before: dict[str, tuple]) -> dict:
    out = subprocess.run(tune_cmd(db, 4), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    new = {json.dumps(c, sort_keys=True, separators=(",", ":")) for c in result["new_configs"]}
    assert result["reused"] == len(before)
    assert len(new) == result["trials"] == 4
    assert not new & set(before), "a config measured before the interruption was run again"
    after = rows(db)
    assert set(after) == set(before) | new  # nothing lost, nothing doubled
    # Untouched, unless the final interleaved comparison of the leaders re-timed them.
    confirmed = {json.dumps(c["config"], sort_keys=True, separators=(",", ":")) for c in result["confirmed"]}
    for key, row in before.items():
        if key not in confirmed:
            assert after[key] == row
    assert integrity(db) == "ok"
    study_db = db.with_name(db.stem + ".optuna.db")
    assert integrity(study_db) == "ok"
    # The Optuna study resumed too: it holds every measured config of both runs, each once.
    conn = sqlite3.connect(study_db)
    measured = conn.execute("SELECT COUNT(*) FROM trial_user_attributes WHERE key = 'tunesvc_measured'").fetchone()[0]
    conn.close()
    assert len(before) + 4 <= measured <= len(before) + 5  # +1: killed between telling the study and storing
    return result


def test_resume_after_kill_9(tmp_path):
    db = tmp_path / "tune.db"
    done, pid = stop_midway(db, signal.SIGKILL)
    assert done.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while workers_of(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers_of(pid) == [], "the killed tuner left its worker running"
    before = rows(db)
    assert len(before) >= 2
    resume_and_check(db, before)


def test_resume_after_ctrl_c(tmp_path):
    db = tmp_path / "tune.db"
    done, pid = stop_midway(db, signal.SIGINT)
    assert done.returncode == 130, done.stderr
    assert "run the same command again to resume" in done.stderr
    assert workers_of(pid) == []
    before = rows(db)
    assert len(before) >= 2
    resume_and_check(db, before)


@pytest.mark.parametrize("rule", ["patience", "budget"])
def test_stopping_rules_are_reported(tmp_path, cl_info, rule):
    from tunesvc.tuning.tuner import tune

    kw = {"patience": 3, "min_improvement": 0.5} if rule == "patience" else {"time_budget": 2.0}
    r = tune("matmul", (16, 16, 16), device=cl_info, db=tmp_path / "t.db", strategy="random", seed=1, **kw)
    if rule == "patience":
        # A 50% improvement is rare: the run stops 3 trials after the last one, and says why.
        assert r.stop_reason == "no improvement of 50.0% in 3 trials"
        assert r.stop_rules == "patience 3 trials at 50.0%"
        assert len(r.measured) >= 3
    else:
        assert r.stop_reason == "time budget of 2 s spent"
        assert r.stop_rules == "budget 2 s"
        assert r.elapsed < 2.0 + 60  # one trial may run over, bounded by its timeout
