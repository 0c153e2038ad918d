"""Several workers share one search through Optuna's RDB storage on a real PostgreSQL server.

The server is the session's one (the ``postgres_url`` fixture of tests/conftest.py, from
tests/pg_helpers.py: Debian's ``postgresql`` on loopback in a temporary folder); the test is
skipped, with the reason, where no server can be had. Each worker has its own
tuning database, as it would on its own machine; only ``--storage`` is shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
# A quick, all-healthy template (16 configs): this tests the shared search, not a kernel.
HEALTHY = str(Path(__file__).parent / "fault_templates" / "healthy.py")
SHAPE = "4096"


def start_worker(url: str, db: Path, seed: int, trials: int, *more: str) -> subprocess.Popen:
    return subprocess.Popen([TUNESVC, "tune", HEALTHY, "--shape", SHAPE, "--seed", str(seed), "--trials", str(trials),
                             "--storage", url, "--db", str(db), "--json", *more],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)


def key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def measured_trials(url: str, study: str) -> list:
    import optuna

    storage = optuna.storages.RDBStorage(url.replace("postgresql:", "postgresql+psycopg:"))
    try:
        return [t for t in optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
                if t.user_attrs.get("tunesvc_measured")]
    finally:
        storage.engine.dispose()  # psycopg 3 warns of connections left open at exit


def test_workers_share_one_study(postgres_url, tmp_path):

    # Two workers at once, each with its own local database (its own machine).
    procs = [start_worker(postgres_url, tmp_path / f"worker{i}.db", seed=i, trials=3) for i in range(2)]
    first = [finish(p) for p in procs]
    assert first[0]["study"] == first[1]["study"]
    assert "postgresql" in first[0]["storage"]
    # A third worker, started later on a fresh machine, knows from the study alone what the
    # others measured and measures none of it again.
    late = finish(start_worker(postgres_url, tmp_path / "worker2.db", seed=2, trials=3))
    before = {key(c) for r in first for c in r["new_configs"]}
    assert late["reused"] == 0  # its own database was empty...
    assert not before & {key(c) for c in late["new_configs"]}  # ...yet it repeated nothing

    measured = measured_trials(postgres_url, late["study"])
    assert len(measured) == 9  # every trial of every worker is in the shared study
    assert {t.user_attrs["status"] for t in measured} <= {"ok", "build", "launch", "wrong_result", "timeout", "crash"}


@pytest.mark.parametrize("strategy", [None, "tpe"])  # None: the default strategy
def test_workers_at_once_never_measure_one_config_twice(postgres_url, tmp_path, strategy):
    # Three workers on one device model start together with more trials than the 16 configs of the
    # space: together they must measure every config at most once, and run out of configs rather
    # than repeat one. Same seed for all, so each one's strategy wants the same configs first.
    more = ("--strategy", strategy) if strategy else ()
    procs = [start_worker(postgres_url, tmp_path / f"w{i}.db", 5, 8, *more) for i in range(3)]
    results = [finish(p) for p in procs]
    assert all(r["strategy"] == (strategy or results[0]["strategy"]) for r in results)
    new = [key(c) for r in results for c in r["new_configs"]]
    assert len(new) == len(set(new)), "a config was measured by two workers"
    assert len(set(new)) == 16 and all(r["stop_reason"] in ("space exhausted", "8 trials done") for r in results)
    measured = measured_trials(postgres_url, results[0]["study"])
    assert sorted(key(t.params) for t in measured) == sorted(new)  # one trial per measured config in the study
