"""tunesvc serve: real HTTP on loopback, a real server process, a real tuning database."""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from db_helpers import CPU, make_records

from tunesvc.cache import Store
from tunesvc.lookup import lookup
from tunesvc.service.openapi import document

pytest.importorskip("uvicorn", reason="pip install 'tunesvc[service]'")
TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
DOCS = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, headers: dict | None = None, data: bytes | None = None, method: str | None = None):
    """(status, parsed JSON or text) of one request."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body, status, kind = r.read(), r.status, r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        body, status, kind = e.read(), e.code, e.headers.get("content-type", "")
    return status, json.loads(body) if kind.startswith("application/json") else body.decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("serve")
    db = tmp_path / "t.db"
    store = Store(db)
    store.put_many(make_records())
    store.close()
    port = free_port()
    env = {**os.environ, "TUNESVC_SHIPPED_DB": str(tmp_path / "none")}
    env.pop("TUNESVC_TOKEN", None)
    proc = subprocess.Popen([TUNESVC, "serve", "--db", str(db), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if get(base + "/v1/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {proc.communicate(timeout=10)[1]}")
    yield base, db
    proc.terminate()
    proc.communicate(timeout=10)  # reaps it and closes the pipe


def test_lookup_over_http_answers_as_the_library_does(server):
    base, db = server
    status, body = get(f"{base}/v1/lookup?template=matmul&shape=64x64x64&device={urllib.request.quote(CPU.key)}&explain=1")
    assert status == 200, body
    here = lookup("matmul", "64x64x64", "float32", CPU.key, db)
    assert body["level"] == here.level == "exact" and body["params"] == here.params
    assert body["time_s"] == here.time and body["schema_version"] == 1 and body["explain"] == list(here.explain)
    status, near = get(f"{base}/v1/lookup?template=matmul&shape=70x64x64&device={urllib.request.quote(CPU.key)}")
    assert status == 200 and near["level"] == "nearest_shape" and near["tuned_shape"] == "64x64x64"


def test_a_repeated_lookup_answers_alike_on_the_fast_path_and_is_counted(server):
    """The second and later asks of one query string are answered before Starlette (FastLookup):
    the same bytes as the first, counted in /metrics like any lookup; a bad query repeated still
    gets its error."""
    base, _ = server
    url = f"{base}/v1/lookup?template=matmul&shape=256x256x256&device={urllib.request.quote(CPU.key)}"

    def exact_count() -> int:
        text = get(f"{base}/metrics")[1]
        return int(re.search(r'tunesvc_lookups_total\{level="exact"\} (\d+)', text).group(1))

    first = get(url)
    before = exact_count()
    again = [get(url) for _ in range(3)]
    assert all(a == first for a in again) and first[0] == 200 and first[1]["level"] == "exact"
    assert exact_count() == before + 3
    for _ in range(2):
        got, body = get(f"{base}/v1/lookup?template=nosuch&shape=64")
        assert got == 404 and "unknown template 'nosuch'" in body["error"]


@pytest.mark.parametrize("path, status, says", [
    ("/v1/lookup?shape=64x64x64", 400, "'template' is required"),
    ("/v1/lookup?template=nosuch&shape=64", 404, "unknown template 'nosuch'"),
    ("/v1/lookup?template=matmul&shape=64xAx64", 400, "shape"),
    ("/v1/lookup?template=matmul&shape=" + "9" * 600, 400, "longer than 512"),
    ("/v1/lookup?template=matmul&shape=64x64x64&x=" + "a" * 5000, 414, "query string longer"),
    ("/v1/records?limit=100000", 400, "'limit' must be from 1 to 1000"),
    ("/v1/nothing", 404, "no route"),
])
def test_bad_requests_get_a_4xx_json_error(server, path, status, says):
    got, body = get(server[0] + path)
    assert got == status and says in body["error"], body


def test_records_best_metrics_and_openapi(server):
    base, _ = server
    status, body = get(f"{base}/v1/records?template=matmul&limit=3")
    assert status == 200 and len(body["records"]) == 3 and body["records"][0]["template"] == "matmul"
    status, best = get(f"{base}/v1/best?template=matmul")
    assert status == 200 and {b["shape"] for b in best["best"]} == {"64x64x64", "256x256x256"}
    assert all(b["time_s"] == pytest.approx(1e-3) for b in best["best"])  # config 0 is the fastest of each shape
    status, text = get(f"{base}/metrics")
    assert status == 200 and 'tunesvc_requests_total{route="records",status="200"}' in text
    assert 'tunesvc_lookups_total{level="exact"}' in text
    status, spec = get(f"{base}/openapi.json")
    assert status == 200 and spec == document() == json.loads(DOCS.read_text())  # docs/openapi.json is current


def test_a_read_only_server_refuses_writes(server):
    status, body = get(server[0] + "/v1/lookup?template=matmul&shape=64x64x64", data=b"{}", method="POST")
    assert status == 405 and "not allowed" in body["error"]


def test_lookups_keep_answering_while_another_process_writes(server):
    base, db = server
    stop, errors = threading.Event(), []

    def write():
        store = Store(db)
        i = 0
        while not stop.is_set():
            store.put_many(make_records(shapes=((32 + i % 50, 64, 64),), n=3))
            i += 1
        store.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        url = f"{base}/v1/lookup?template=matmul&shape=64x64x64&device={urllib.request.quote(CPU.key)}"
        for _ in range(200):
            status, body = get(url)
            if status != 200 or body["level"] != "exact":
                errors.append((status, body))
    finally:
        stop.set()
        writer.join()
    assert errors == []
