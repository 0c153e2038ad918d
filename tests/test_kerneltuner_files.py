"""The parser of recorded tuning spaces, on small real files copied from ../shared/replay."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tunesvc.errors import ImportFileError
from tunesvc.replay.files import load

DATA = Path(__file__).parent / "data"
KT = DATA / "pnpoly_RTX_3090_small.json.gz"
T4 = DATA / "convolution_A100_T4.json"
SHARED = Path(__file__).parent.parent.parent / "shared" / "replay"


def test_kernel_tuner_cache_file():
    rec = load(KT)
    assert rec.format == "kerneltuner"
    assert rec.device_name == "NVIDIA GeForce RTX 3090" and rec.kernel_name == "cn_pnpoly"
    assert rec.problem_size == (20000000,)
    assert [d.name for d in rec.dims] == ["between_method", "block_size_x", "tile_size", "use_method"]
    assert rec.dims[1].values == (32, 64, 128, 256, 512, 768, 928, 992)
    assert len(rec.configs) == 1056 and len(rec.failures) == 115 and len(rec.valid) == 941
    assert {c.status for c in rec.failures} == {"runtime"}
    assert all(c.time is None for c in rec.failures)
    # milliseconds in the file, seconds here; the times are sorted
    assert 1e-4 < rec.optimum < 1.0 and rec.times[0] == rec.optimum and (rec.times[1:] >= rec.times[:-1]).all()
    ok = rec.valid[0]
    assert ok.samples and ok.compile_seconds >= 0 and ok.benchmark_seconds > 0
    assert rec.by_config[ok.config] is ok


def test_t4_file():
    rec = load(T4)
    assert rec.format == "t4"
    assert rec.kernel_name == "convolution" and rec.device_name == "A100"  # T4 names neither: from the file name
    assert len(rec.configs) == 490 and len(rec.failures) == 16
    assert {c.status for c in rec.failures} == {"runtime"}
    dims = {d.name: d.values for d in rec.dims}
    assert dims["block_size_x"] == (16, 80, 176) and dims["block_size_y"] == (2, 4, 8)
    assert all(c.compile_seconds > 0 for c in rec.configs)


@pytest.mark.skipif(not (SHARED / "convolution_A100.json.gz").exists(), reason="needs ../shared/replay")
def test_t4_and_cache_file_of_one_run_agree():
    """The same tuning run written both ways parses to the same outcomes."""
    kt, t4 = load(SHARED / "convolution_A100.json.gz"), load(SHARED / "convolution_A100_T4.json.gz")
    assert {c.config: (c.status, c.time) for c in kt.configs} == {c.config: (c.status, c.time) for c in t4.configs}
    assert {c.status for c in kt.failures} == {"build", "runtime"}


def test_failure_strings_and_an_interrupted_file(tmp_path):
    text = KT.read_bytes()
    data = json.loads(gzip.decompress(text))
    entries = list(data["cache"].items())[:3]
    entries[0][1]["time"] = "CompilationFailedConfig"
    entries[1][1]["time"] = "InvalidConfig"
    data["cache"] = dict(entries)
    full = json.dumps(data)
    # Kernel Tuner leaves the cache of a run it was stopped in without the closing braces
    assert full.endswith("}}}")
    cut = full[:-2] + ","  # the last entry, then no end of "cache" nor of the file
    path = tmp_path / "cut.json"
    path.write_text(cut)
    rec = load(path)
    assert [c.status for c in rec.configs] == ["build", "constraint", "ok"]


@pytest.mark.parametrize("content, message", [
    (b"", "not readable JSON"),
    (b"{\"cache\": ", "not readable JSON"),
    (b"[1, 2]", "neither a Kernel Tuner cache file"),
    (b"{\"results\": []}", "has no results"),
    (b"{\"tune_params\": {\"a\": [1]}, \"tune_params_keys\": [\"a\"], \"cache\": {\"1\": {\"b\": 1}}}", "damaged"),
    (b"\x1f\x8b\x08garbage", "not readable JSON"),
])
def test_bad_files_raise_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=message):
        load(path)


def test_missing_file():
    with pytest.raises(ImportFileError, match="no such file"):
        load("does/not/exist.json.gz")
