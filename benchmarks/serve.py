"""Lookups per second and latency of `tunesvc serve`, from wrk on loopback, beside a trivial
Starlette handler on uvicorn measured in the same run (the floor the HTTP stack sets).

    python benchmarks/serve.py [--seconds 10] [--connections 64] [--threads 2]

Needs wrk (Debian: apt-get install wrk) and the service extra. Prints a table; the lookup is
warm (one PRAGMA data_version and one dict hit per request).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TRIVIAL = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
import uvicorn, sys

async def hello(request):
    return Response(b'{"ok":true}', media_type="application/json")

uvicorn.run(Starlette(routes=[Route("/", hello)]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str) -> None:
    for _ in range(400):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server at {url} did not start")


def run_wrk(url: str, seconds: int, connections: int, threads: int) -> dict:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    lat = {p: float(v) * unit[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"), "non_2xx": int(errors.group(1)) if errors else 0}


def serve(make_args, env) -> tuple[subprocess.Popen, int]:
    """A server process started with ``make_args(port)`` on a free port."""
    port = free_port()
    return subprocess.Popen(make_args(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    from db_helpers import CPU, make_records

    from tunesvc.cache import Store

    rows = []
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "t.db"
        store = Store(db)
        store.put_many(make_records())
        store.close()
        env = {**os.environ, "TUNESVC_SHIPPED_DB": str(Path(d) / "none")}
        env.pop("TUNESVC_TOKEN", None)
        trivial, port = serve(lambda p: [sys.executable, "-c", TRIVIAL, str(p)], env)
        try:
            wait_up(f"http://127.0.0.1:{port}/")
            rows.append(("trivial Starlette handler (reference)", run_wrk(f"http://127.0.0.1:{port}/", a.seconds, a.connections, a.threads)))
        finally:
            trivial.terminate()
            trivial.wait()
        exe = str(Path(sys.executable).with_name("tunesvc"))
        server, port = serve(lambda p: [exe, "serve", "--db", str(db), "--port", str(p)], env)
        try:
            url = f"http://127.0.0.1:{port}/v1/lookup?template=matmul&shape=64x64x64&device={urllib.request.quote(CPU.key)}"
            wait_up(url)
            rows.append(("tunesvc serve /v1/lookup (warm, exact)", run_wrk(url, a.seconds, a.connections, a.threads)))
        finally:
            server.terminate()
            server.wait()
    ref = rows[0][1]["rps"]
    print(f"wrk -t{a.threads} -c{a.connections} -d{a.seconds}s, {os.cpu_count()} CPUs")
    print(f"{'server':42} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'of reference':>13}")
    for name, r in rows:
        print(f"{name:42} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8d} {r['rps'] / ref:12.2f}x")


if __name__ == "__main__":
    main()
