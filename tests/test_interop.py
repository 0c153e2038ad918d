"""Kernel Tuner cache files and T4 files imported as records of the template named like their kernel.

The files are small real recordings (tests/data, cut from ../shared/replay). The pnpoly kernel
itself is never run here: its template exists so the records have parameters to be checked against.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest
from db_helpers import db_digest

import tunesvc.lookup  # noqa: F401
from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cache.exchange import import_files
from tunesvc.cache.interop import recorded_timing
from tunesvc.errors import ImportFileError
from tunesvc.replay.files import load
from tunesvc.templates.base import KernelTemplate, Param
from tunesvc.types import Fingerprint

DATA = Path(__file__).parent / "data"
KT = DATA / "pnpoly_RTX_3090_small.json.gz"
T4 = DATA / "convolution_A100_T4.json"
lookup_mod = sys.modules["tunesvc.lookup"]


class RecordedPnpoly(KernelTemplate):
    """Point-in-polygon (Kernel Tuner's cn_pnpoly example), known here only from its recording."""

    name = "cn_pnpoly"
    source_file = __file__  # hashed like any source; this recording has no kernel source of ours
    dims = ("N",)
    default_shape = (20_000_000,)
    params = (
        Param("between_method", (0, 1, 2, 3), 0),
        Param("block_size_x", (32, 64, 128, 256, 512, 768, 928, 992), 32),
        Param("tile_size", (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20), 1),
        Param("use_method", (0, 1, 2), 0),
    )

    def plan(self, config, shape, dtype):
        raise NotImplementedError("recorded only: this kernel is not run by tunesvc")

    def make_inputs(self, shape, dtype, rng):
        raise NotImplementedError("recorded only: this kernel is not run by tunesvc")

    def reference(self, inputs, shape):
        raise NotImplementedError("recorded only: this kernel is not run by tunesvc")

    def flops(self, shape):
        return 600.0 * shape[0]  # 600 vertices tested per point

    def bytes_moved(self, shape, dtype):
        return 12.0 * shape[0]


@pytest.fixture
def pnpoly(monkeypatch):
    tpl = RecordedPnpoly()
    monkeypatch.setitem(templates._instances, tpl.name, tpl)
    return tpl


@pytest.fixture
def no_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(lookup_mod, "shipped_db_dir", lambda: tmp_path / "no_tuning_db")
    lookup_mod.clear_cache()
    yield
    lookup_mod.clear_cache()


def test_unknown_kernel_is_rejected_record_by_record(tmp_path):
    s = import_files([KT], tmp_path / "t.db")
    space = load(KT)
    assert s.added == 0 and sum(s.rejected.values()) == len(space.configs)
    assert list(s.rejected) == ["no template is registered under the kernel name 'cn_pnpoly'; "
                                "register one with tunesvc.templates.register whose parameters match the file"]


def test_kernel_tuner_cache_file_imports_and_answers_lookups(tmp_path, pnpoly, no_shipped):
    db = tmp_path / "t.db"
    space = load(KT)
    s = import_files([KT], db)
    assert s.added == len(space.configs) and not s.rejected
    store = Store(db, readonly=True)
    recs = list(store.records("cn_pnpoly"))
    store.close()
    ok = [r for r in recs if r.measurement.ok]
    assert len(ok) == len(space.valid) and len(recs) - len(ok) == len(space.failures)
    assert {r.fingerprint.vendor for r in recs} == {"NVIDIA"} and {r.source for r in recs} == {KT.name}
    median = {c.config: recorded_timing(c).median for c in space.valid}  # Kernel Tuner's time is the samples' mean
    fastest = min(space.valid, key=lambda c: median[c.config])
    # an OpenCL or CUDA fingerprint of the same board finds the recording through the family level
    asker = Fingerprint("cuda", "NVIDIA", "gpu", "sm_86", "NVIDIA GeForce RTX 3090", "550.54")
    res = lookup_mod.lookup("cn_pnpoly", (20_000_000,), "float32", asker.key, db)
    assert res.level == "family" and res.config == fastest.config and res.time == pytest.approx(median[fastest.config])

    before = db_digest(db)
    again = import_files([KT], db)
    assert again.added == again.replaced == 0 and db_digest(db) == before


def test_t4_file_without_problem_size(tmp_path, monkeypatch, pnpoly):
    conv = type("RecordedConvolution", (RecordedPnpoly,), {"name": "convolution", "params": tuple(
        Param(n, v, v[0]) for n, v in ((d.name, d.values) for d in load(T4).dims))})()
    monkeypatch.setitem(templates._instances, "convolution", conv)
    s = import_files([T4], tmp_path / "t.db")
    assert s.added == 0 and list(s.rejected) == ["the t4 file gives no problem size; tunesvc keys every record by its shape "
                                                 "(give it with --problem-size)"]


def test_mismatched_parameters_are_rejected(tmp_path, monkeypatch):
    other = type("OtherPnpoly", (RecordedPnpoly,), {"params": (Param("block_size_x", (32, 64), 32),)})()
    monkeypatch.setitem(templates._instances, "cn_pnpoly", other)
    s = import_files([KT], tmp_path / "t.db")
    assert s.added == 0 and all("unknown parameter" in reason or "is not one of" in reason for reason in s.rejected)


def test_corrupt_kernel_tuner_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "cut.json"
    bad.write_bytes(gzip.decompress(KT.read_bytes())[:5000])
    db = tmp_path / "t.db"
    Store(db).close()
    before = db_digest(db)
    with pytest.raises(ImportFileError, match="neither a tunesvc export"):
        import_files([bad], db)
    assert db_digest(db) == before
