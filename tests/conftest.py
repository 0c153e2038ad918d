"""Shared fixtures. Tests run real kernels on a real OpenCL device (PoCL on machines without a GPU)."""

from __future__ import annotations

import os
import tempfile

import pytest

# Never write the developer's own ~/.cache/tunesvc from a test (PoCL's kernel cache stays where it is).
_TMP = tempfile.mkdtemp(prefix="tunesvc-test-")
os.environ.setdefault("TUNESVC_DB", os.path.join(_TMP, "default.db"))
# Driver verdicts and the registered vendor folder too: each test session checks its drivers afresh.
os.environ.setdefault("TUNESVC_CACHE_DIR", os.path.join(_TMP, "cache"))
# Tests see no shipped results unless they bring their own: lookups then answer from what each
# test stored, whatever tuning_db/ happens to hold. tests/test_shipped.py reads the real folder.
os.environ.setdefault("TUNESVC_SHIPPED_DB", os.path.join(_TMP, "no-shipped-results"))
# Nor do their lookups count demand into the databases they read (a background write would change
# files that tests compare byte for byte): tests/test_demand.py turns it on where it tests it.
os.environ.setdefault("TUNESVC_DEMAND", "0")


@pytest.fixture(scope="session")
def cl_info():
    """The default OpenCL device (the CPU device where there is no GPU)."""
    from tunesvc.devices import discover, default_device

    devices = [d for d in discover().devices if d.fingerprint.backend == "opencl"]
    if not devices:
        pytest.fail("no OpenCL device: install one, e.g. pip install 'tunesvc[intel]'")
    return default_device(devices)


def usable_opencl():
    """Every usable OpenCL device: one per driver present (Intel's CPU runtime, Debian's PoCL, pip's PoCL)."""
    from tunesvc.devices import discover

    return [d for d in discover().devices if d.fingerprint.backend == "opencl"]


@pytest.fixture(scope="session")
def cl_infos():
    return usable_opencl()


@pytest.fixture(scope="session")
def cl_fp16(cl_infos):
    """A usable OpenCL device with cl_khr_fp16 (Intel's CPU runtime here), or skip."""
    found = [d for d in cl_infos if d.fp16]
    if not found:
        pytest.skip("no usable OpenCL device reports cl_khr_fp16 (pip install 'tunesvc[intel]' adds one on x86-64)")
    return found[0]


@pytest.fixture(scope="session")
def cl_no_fp16(cl_infos):
    """A usable OpenCL device without cl_khr_fp16 (PoCL here), or skip."""
    found = [d for d in cl_infos if not d.fp16]
    if not found:
        pytest.skip("every usable OpenCL device has float16")
    return found[0]


@pytest.fixture(scope="session")
def cl_device(cl_info):
    from tunesvc.devices import open_device

    return open_device(cl_info)


@pytest.fixture
def db_path(tmp_path, monkeypatch):
    """A fresh database file; TUNESVC_DB points at it so nothing touches the user's cache."""
    path = tmp_path / "tune.db"
    monkeypatch.setenv("TUNESVC_DB", str(path))
    from tunesvc.lookup import clear_cache

    clear_cache()
    yield path
    clear_cache()


def pytest_generate_tests(metafunc):
    """``each_cl_device``: the test runs once on every usable OpenCL driver present."""
    if "each_cl_device" in metafunc.fixturenames:
        infos = usable_opencl()
        metafunc.parametrize("each_cl_device", infos, ids=[f"{d.id}-{d.fingerprint.driver.split()[0]}" for d in infos],
                             indirect=True)


@pytest.fixture(scope="session")
def each_cl_device(request):
    from tunesvc.devices import open_device

    return open_device(request.param)


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole session (tests/pg_helpers.py), or skip with the reason."""
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install 'tunesvc[postgres]'")
    from pg_helpers import Server, Unavailable

    try:
        server = Server()
    except Unavailable as e:
        pytest.skip(str(e))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's PostgreSQL server: its URL."""
    return postgres_server.create_database()



def pytest_terminal_summary(terminalreporter):
    """The drivers this run tested on, and each one it could not, with why: a driver that drops out
    (and the tests it would have run) shows in the CI log, -q included."""
    from tunesvc.devices import discover

    found = discover()
    terminalreporter.write_sep("-", "tunesvc devices")
    for d in found.devices:
        terminalreporter.write_line(f"{d.id} {d.name} [{d.fingerprint.driver}]")
    for d, why in found.unusable:
        terminalreporter.write_line(f"unusable: {d.id} [{d.fingerprint.driver}]: {why[:200]}")
