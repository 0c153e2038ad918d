"""Fault isolation on the real PoCL device: candidates that hang, crash, exhaust the device,
compute wrong results or fail to build are recorded with their reason, and tuning goes on.

The faults are real kernels (tests/fault_templates/faults.cl), run through the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tunesvc.types import Config

FAULTS = Path(__file__).parent / "fault_templates" / "faults.py"
TUNESVC = str(Path(sys.executable).with_name("tunesvc"))  # the console script of this venv
EXPECTED = {0: "ok", 1: "timeout", 2: "crash", 3: "launch", 4: "wrong_result", 5: "build"}


def worker_pids(parent: int) -> list[int]:
    """Live (not zombie) ``tunesvc.measure.worker`` processes whose parent is ``parent``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if "tunesvc.measure.worker" in cmd and fields[0] != "Z" and int(fields[1]) == parent:
            found.append(int(d.name))
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # dead; only its exit status is left for a parent that no longer exists


def test_every_fault_is_recorded_and_the_search_goes_on(tmp_path):
    db = tmp_path / "faults.db"
    out = subprocess.run(
        [TUNESVC, "tune", str(FAULTS), "--strategy", "grid", "--timeout", "2",
         "--db", str(db), "--json"],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["isolated"] and result["trials"] == 12
    # Two hangs and two segfaults each cost the tuner one worker.
    assert result["replaced_workers"] == 4
    assert result["failures"] == {"timeout": 2, "crash": 2, "launch": 2, "wrong_result": 2, "build": 2}

    from tunesvc.cache import Store

    records = list(Store(db, readonly=True).records(template="faults"))
    assert len(records) == 12
    for r in records:
        m = r.measurement
        assert m.status == EXPECTED[m.config["FAULT"]], (dict(m.config), m.status, m.reason)
        assert m.reason or m.ok
    crash = [r.measurement.reason for r in records if r.measurement.status == "crash"]
    assert all("SIGSEGV" in why for why in crash), crash
    # The search went on after the faults: healthy configs measured after the first hang are there and timed.
    order = [c["FAULT"] for c in result["new_configs"]]
    assert order.index(1) < max(i for i, f in enumerate(order) if f == 0)
    assert result["best"]["config"]["FAULT"] == 0 and result["best"]["time_s"] > 0


def test_worker_is_replaced_and_leaves_nothing_behind(cl_info):
    from tunesvc import templates
    from tunesvc.measure.worker import Job, Worker

    tpl = templates.load_file(FAULTS)
    worker = Worker(Job(templates.ref(tpl), (1024,), "float32", cl_info), timeout=2)
    try:
        statuses = [worker.evaluate(Config(FAULT=f, COPY=1)).status for f in (1, 0, 2, 0)]
        assert statuses == ["timeout", "ok", "crash", "ok"]
        assert worker.replaced == 2
        assert len(worker_pids(os.getpid())) == 1  # only the live one; the hung one was killed and reaped
    finally:
        worker.close()
    assert worker_pids(os.getpid()) == []


HANG_SCRIPT = """
import sys
from tunesvc import templates
from tunesvc.devices import select_device
from tunesvc.types import Config
from tunesvc.measure.worker import Job, Worker
tpl = templates.load_file(sys.argv[1])
w = Worker(Job(templates.ref(tpl), (1024,), "float32", select_device(None)), timeout=None)
print(w._process().pid, flush=True)
w.evaluate(Config(FAULT=1, COPY=1))  # hangs for ever
"""


def test_a_killed_tuner_takes_its_hung_worker_with_it():
    parent = subprocess.Popen([sys.executable, "-c", HANG_SCRIPT, str(FAULTS)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        time.sleep(1.0)  # the worker is now spinning in the hung kernel
        assert not gone(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(pid), "the hung worker outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_bad_timeout_is_a_usage_error(tmp_path):
    out = subprocess.run([TUNESVC, "tune", "matmul", "--shape", "8x8x8", "--timeout", "0",
                          "--db", str(tmp_path / "x.db")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["Error: --timeout must be a positive number of seconds"]
    assert not (tmp_path / "x.db").exists()


def test_in_process_the_same_faults_get_the_same_reasons(cl_device):
    """--no-isolation: the faults that cannot kill the process are still told apart."""
    from tunesvc import templates
    from tunesvc.measure.evaluator import Evaluator

    ev = Evaluator(cl_device, templates.load_file(FAULTS), (256,), "float32")
    got = {f: ev.evaluate(Config(FAULT=f, COPY=1)).status for f in (0, 3, 4, 5)}
    assert got == {f: EXPECTED[f] for f in (0, 3, 4, 5)}
