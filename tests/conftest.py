"""Shared fixtures. Tests run real kernels on a real OpenCL device (PoCL on machines without a GPU)."""

from __future__ import annotations

import os
import tempfile

import pytest

# Never write the developer's own ~/.cache/tunesvc from a test (PoCL's kernel cache stays where it is).
os.environ.setdefault("TUNESVC_DB", os.path.join(tempfile.mkdtemp(prefix="tunesvc-test-"), "default.db"))


@pytest.fixture(scope="session")
def cl_info():
    """The default OpenCL device (the CPU device where there is no GPU)."""
    from tunesvc.devices import discover, default_device

    devices = [d for d in discover().devices if d.fingerprint.backend == "opencl"]
    if not devices:
        pytest.fail("no OpenCL device: install one, e.g. pip install 'tunesvc[pocl]'")
    return default_device(devices)


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
