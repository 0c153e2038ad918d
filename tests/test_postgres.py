"""Several workers share one search through Optuna's RDB storage on a real PostgreSQL server.

The server is Debian's ``postgresql`` package, started on loopback in a temporary folder
(installed with apt-get first where it is missing and this test may install it); the
test is skipped, with the reason, where no server can be had. Each worker has its own
tuning database, as it would on its own machine; only ``--storage`` is shared.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
# A quick, all-healthy template (16 configs): this tests the shared search, not a kernel.
HEALTHY = str(Path(__file__).parent / "fault_templates" / "healthy.py")
SHAPE = "4096"


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def install_postgres() -> str | None:
    """apt-get install postgresql where allowed; the reason it was not, else None."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "PostgreSQL is not installed and this user cannot apt-get install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "postgresql"]
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, check=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as e:
        return f"apt-get install postgresql failed: {e}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install 'tunesvc[postgres]'")
    if pg_bin() is None:
        why = install_postgres()
        if why or pg_bin() is None:
            pytest.skip(why or "apt-get installed postgresql but no initdb was found")
    bindir = pg_bin()
    # PostgreSQL refuses to run as root: run it as the package's 'postgres' user then.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
    home = Path(tempfile.mkdtemp(prefix="tunesvc-pg-"))
    data, port = home / "data", free_port()
    if as_user:
        shutil.chown(home, "postgres")
    try:
        subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off"
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(home / "log"), "-w", "start"],
                       check=True, capture_output=True, timeout=120)
    except subprocess.SubprocessError as e:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip(f"cannot start PostgreSQL: {e}")
    try:
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "tunesvc"],
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql://postgres@127.0.0.1:{port}/tunesvc"
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def start_worker(url: str, db: Path, seed: int, trials: int) -> subprocess.Popen:
    return subprocess.Popen([TUNESVC, "tune", HEALTHY, "--shape", SHAPE, "--seed", str(seed), "--trials", str(trials),
                             "--storage", url, "--db", str(db), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out)


def key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def test_workers_share_one_study(postgres_url, tmp_path):
    import optuna

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

    storage = optuna.storages.RDBStorage(postgres_url.replace("postgresql:", "postgresql+psycopg:"))
    try:
        study = optuna.load_study(study_name=late["study"], storage=storage)
        measured = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tunesvc_measured")]
    finally:
        storage.engine.dispose()  # psycopg 3 warns of connections left open at exit
    assert len(measured) == 9  # every trial of every worker is in the shared study
    assert {t.user_attrs["status"] for t in measured} <= {"ok", "build", "launch", "wrong_result", "timeout", "crash"}
