"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, started on loopback in
a temporary folder (installed with apt-get first where it is missing and this user may), one per
test session; each test that asks gets a fresh database on it. Where no server can be had the
tests that need one are skipped with the reason.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class Unavailable(Exception):
    """No PostgreSQL server can be had here; the message says why (a skip reason)."""


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


class Server:
    """One PostgreSQL server on 127.0.0.1, trusting local connections, in a folder of its own."""

    def __init__(self):
        if pg_bin() is None:
            why = install_postgres()
            if why or pg_bin() is None:
                raise Unavailable(why or "apt-get installed postgresql but no initdb was found")
        self.bin = pg_bin()
        # PostgreSQL refuses to run as root: run it as the package's 'postgres' user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user and not shutil.which("runuser"):
            raise Unavailable("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
        self.home = Path(tempfile.mkdtemp(prefix="tunesvc-pg-"))
        self.data, self.port = self.home / "data", free_port()
        self._names = itertools.count()
        if self.as_user:
            shutil.chown(self.home, "postgres")
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
            opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.home} -c fsync=off"
            self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.home / "log"), "-w", "start")
        except (subprocess.SubprocessError, OSError) as e:
            shutil.rmtree(self.home, ignore_errors=True)
            raise Unavailable(f"cannot start PostgreSQL: {e}") from None

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(self.as_user + [str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database on this server: its URL (tests never share tables)."""
        name = f"tunesvc_{os.getpid()}_{next(self._names)}"
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
                       check=True, capture_output=True, timeout=60)
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.home, ignore_errors=True)
