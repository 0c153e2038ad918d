"""Kernel Tuner both ways, checked against Kernel Tuner 1.5 itself (the dev extra installs it).

Kernel Tuner tunes a small saxpy kernel on this machine's CPU OpenCL device and writes its cache
file; tunesvc imports it and a lookup on the same CPU answers from it. tunesvc tunes the example
saxpy template's whole space and exports it with ``--format kerneltuner``; Kernel Tuner's simulation
mode replays that file (brute force) and finds the same best config and the same times.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import kernel_tuner
from kernel_tuner.util import read_cache

import tunesvc
import tunesvc.lookup  # noqa: F401
from tunesvc import templates
from tunesvc.cache import Store
from tunesvc.cache.exchange import import_files
from tunesvc.cli import main
from tunesvc.replay.files import load
from tunesvc.search import SearchSpace
from tunesvc.templates.base import Context, KernelTemplate, Param
from tunesvc.types import Config, Timing

lookup_mod = sys.modules["tunesvc.lookup"]
EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "saxpy.py")
T4 = Path(__file__).parent / "data" / "convolution_A100_T4.json"
N = 4096
#: a saxpy as a Kernel Tuner user writes it: plain OpenCL, the parameters as Kernel Tuner's defines
KT_SOURCE = """
__kernel void saxpy(__global const float* a, __global const float* x, __global const float* y, __global float* out,
                    const int n) {
    const int first = get_group_id(0) * WG * VW * EPT;
    for (int e = 0; e < EPT; e++)
        for (int w = 0; w < VW; w++) {
            const int i = first + (e * WG + get_local_id(0)) * VW + w;
            if (i < n) out[i] = a[0] * x[i] + y[i];
        }
}
"""
KT_PARAMS = {"WG": [16, 64], "VW": [1, 2], "EPT": [1, 2]}  # values of the example template's parameters


@pytest.fixture
def saxpy(db_path, tmp_path, monkeypatch):
    """The example saxpy template, registered under its kernel's name (and Kernel Tuner's files of a
    failed build written in the test's own folder)."""
    monkeypatch.chdir(tmp_path)
    return templates.get(EXAMPLE)


def _platform_device(info) -> tuple[int, int]:
    """Kernel Tuner's platform and device numbers of a tunesvc OpenCL device (its id is opencl:P:D)."""
    _, platform, device = info.id.split(":")
    return int(platform), int(device)


def _kernel_tuner_tunes(path: Path, info) -> dict:
    """Kernel Tuner 1.5 tunes the saxpy kernel on ``info`` by brute force (7 runs per config), caching to ``path``."""
    rng = np.random.default_rng(0)
    a, x, y = np.array([2.0], np.float32), rng.random(N, dtype=np.float32), rng.random(N, dtype=np.float32)
    platform, device = _platform_device(info)
    with warnings.catch_warnings():  # the driver's build log, which pyopencl passes on as a warning
        warnings.simplefilter("ignore")
        _tune(a, x, y, platform, device, path)
    return json.loads(path.read_text())


def _tune(a, x, y, platform: int, device: int, path: Path) -> None:
    kernel_tuner.tune_kernel("saxpy", KT_SOURCE, N, [a, x, y, np.zeros(N, np.float32), np.int32(N)], KT_PARAMS,
                             block_size_names=["WG"], grid_div_x=["WG", "VW", "EPT"], lang="OpenCL", platform=platform,
                             device=device, cache=str(path), iterations=7, strategy="brute_force", quiet=True,
                             answer=[None, None, None, 2 * x + y, None])


def _key(config, names=("WG", "VW", "EPT")) -> str:
    return ",".join(str(config[n]) for n in names)


def test_a_cache_file_kernel_tuner_wrote_on_this_cpu_keeps_its_device_type_and_statistics(tmp_path, cl_info, saxpy):
    written = _kernel_tuner_tunes(tmp_path / "kt.json", cl_info)
    assert len(written["cache"]) == 8 and all(len(e["times"]) == 7 for e in written["cache"].values())
    db = tmp_path / "t.db"
    s = import_files([tmp_path / "kt.json"], db)
    assert s.added == 8 and not s.rejected
    store = Store(db, readonly=True)
    records = list(store.records("saxpy"))
    store.close()
    assert {r.fingerprint.device_type for r in records} == {"cpu"}  # not a GPU: the name is a CPU's
    assert {r.fingerprint.vendor for r in records} == {cl_info.fingerprint.vendor}
    for r in records:
        entry = written["cache"][_key(r.config)]
        want = Timing.from_samples([t * 1e-3 for t in entry["times"]])  # the median, not Kernel Tuner's mean
        t = r.measurement.timing
        assert t.count == 7 and t.median == pytest.approx(want.median) and t.iqr == pytest.approx(want.iqr)
        assert (t.min, t.max) == (pytest.approx(want.min), pytest.approx(want.max))
    assert any(r.measurement.timing.iqr > 0 for r in records)
    best = min(records, key=lambda r: r.measurement.time)
    res = lookup_mod.lookup("saxpy", (N,), "float32", cl_info.fingerprint.key, db)  # the CPU that produced the file
    assert res.level == "family" and res.config == best.config and res.time == pytest.approx(best.measurement.time)


def test_a_cache_file_cut_off_reads_as_kernel_tuner_reads_it(tmp_path, cl_info, saxpy):
    _kernel_tuner_tunes(tmp_path / "kt.json", cl_info)
    text = (tmp_path / "kt.json").read_text()
    start = text.index('"cache": {') + len('"cache": {')
    first_end = text.index("},\n", start) + 1
    cuts = {"before its first entry": text[:start],  # the header Kernel Tuner writes before it runs anything
            "after a whole entry": text[:first_end], "after an entry and its comma": text[:first_end + 1]}
    for why, cut in cuts.items():
        path = tmp_path / "cut.json"
        path.write_text(cut)
        ours = {_key(c.config) for c in load(path).configs}
        assert ours == set(read_cache(str(path), open_cache=False)["cache"]), why
        s = import_files([path], tmp_path / f"{len(cut)}.db")
        assert s.added == len(ours) and not s.rejected, why


def _tunesvc_tunes_the_whole_space(db, info) -> tuple:
    """The example saxpy tuned at N=16 on ``info``, every valid config measured (13 of 36)."""
    tpl = templates.get(EXAMPLE)
    space = SearchSpace.from_template(tpl, Context((16,), "float32", info))
    result = tunesvc.tune(EXAMPLE, (16,), device=info.id, db=str(db), strategy="grid", trials=len(space) + 5)
    assert result.best is not None and len(space) == 13
    return tpl, space


def test_an_export_replays_in_kernel_tuners_simulation_mode(tmp_path, cl_info, saxpy):
    db, out = tmp_path / "t.db", tmp_path / "saxpy_kt.json"
    tpl, space = _tunesvc_tunes_the_whole_space(db, cl_info)
    r = CliRunner().invoke(main, ["export", str(out), "--format", "kerneltuner", "--template", EXAMPLE, "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["schema_version"] == 1 and summary["configs"] == len(space) and summary["shape"] == "16"
    store = Store(db, readonly=True)
    stored = {rec.config: rec.measurement for rec in store.records("saxpy")}
    store.close()

    def tunesvc_space(p):  # Kernel Tuner's restrictions: the template's constraints, as tunesvc applies them
        return Config(p) in space.configs

    cache = json.loads(out.read_text())
    results, env = kernel_tuner.tune_kernel("saxpy", "", (16,), [], cache["tune_params"], restrictions=tunesvc_space,
                                            block_size_names=["WG"], simulation_mode=True, cache=str(out),
                                            strategy="brute_force", quiet=True)
    assert len(results) == len(space)
    for res in results:
        m = stored[Config({n: res[n] for n in cache["tune_params_keys"]})]
        assert res["time"] == pytest.approx(m.time * 1e3, rel=1e-12)
    best = lookup_mod.lookup("saxpy", (16,), "float32", cl_info.fingerprint.key, db)
    assert best.level == "exact"
    assert {n: env["best_config"][n] for n in best.params} == best.params
    assert env["best_config"]["time"] == pytest.approx(best.time * 1e3, rel=1e-12)
    _, inferred = kernel_tuner.tune_cache(str(out), strategy="brute_force", quiet=True, block_size_names=["WG"])
    assert {n: inferred["best_config"][n] for n in best.params} == best.params
    assert json.loads(out.read_text()) == cache  # simulation left the file as it was


def test_an_export_imports_back_with_its_statistics(tmp_path, cl_info, saxpy):
    db, out = tmp_path / "t.db", tmp_path / "saxpy_kt.json"
    _tunesvc_tunes_the_whole_space(db, cl_info)
    r = CliRunner().invoke(main, ["export", str(out), "--format", "kerneltuner", "--template", "saxpy", "--db", str(db)])
    assert r.exit_code == 0 and "as a Kernel Tuner cache file" in r.output, r.output
    back = tmp_path / "back.db"
    assert import_files([out], back).added == 13
    stores = Store(db, readonly=True), Store(back, readonly=True)
    before, after = ({rec.config: rec for rec in s.records("saxpy")} for s in stores)
    for s in stores:
        s.close()
    assert set(before) == set(after)
    for config, rec in after.items():
        t, want = rec.measurement.timing, before[config].measurement.timing
        assert (t.median, t.min, t.max, t.iqr) == pytest.approx((want.median, want.min, want.max, want.iqr), rel=1e-12)
        assert t.count == want.count and rec.fingerprint.device_type == "cpu"
        assert rec.measurement.reason == before[config].measurement.reason  # an abandoned config's note too
    res = lookup_mod.lookup("saxpy", (16,), "float32", cl_info.fingerprint.key, back)
    assert res.level == "family"


def test_export_kerneltuner_needs_one_problem(tmp_path, cl_info, saxpy):
    db = tmp_path / "t.db"
    _tunesvc_tunes_the_whole_space(db, cl_info)
    tunesvc.tune(EXAMPLE, (32,), device=cl_info.id, db=str(db), trials=1)
    runner = CliRunner()
    for args, says in ((["--template", "saxpy"], "2 problems match"), (["--template", "saxpy", "--shape", "64"], "no records match"),
                       (["--best-only"], "--best-only does not go with"), (["--shape", "1x"], "--shape must be")):
        r = runner.invoke(main, ["export", str(tmp_path / "x.json"), "--format", "kerneltuner", "--db", str(db), *args])
        assert r.exit_code == 2 and says in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "x.json").exists()
    r = runner.invoke(main, ["export", str(tmp_path / "x.json"), "--format", "kerneltuner", "--db", str(db),
                             "--template", "saxpy", "--shape", "32"])
    assert r.exit_code == 0 and "exported 1 configs" in r.output, r.output


class RecordedConvolution(KernelTemplate):
    """The convolution of the T4 test file, known here only from its recording."""

    name = "convolution"
    source_file = __file__
    dims = ("W", "H")
    default_shape = (4096, 4096)
    params = tuple(Param(d.name, d.values, d.values[0]) for d in load(T4).dims)

    def plan(self, config, shape, dtype):
        raise NotImplementedError("recorded only")

    def make_inputs(self, shape, dtype, rng):
        raise NotImplementedError("recorded only")

    def reference(self, inputs, shape):
        raise NotImplementedError("recorded only")

    def flops(self, shape):
        return 2.0 * 17 * 17 * shape[0] * shape[1]

    def bytes_moved(self, shape, dtype):
        return 8.0 * shape[0] * shape[1]


def test_a_t4_file_takes_a_problem_size(tmp_path, monkeypatch):
    monkeypatch.setitem(templates._instances, "convolution", RecordedConvolution())
    db, runner = tmp_path / "t.db", CliRunner()
    r = runner.invoke(main, ["import", str(T4), "--db", str(db)])
    assert r.exit_code == 2 and "--problem-size" in r.output
    r = runner.invoke(main, ["import", str(T4), "--db", str(db), "--problem-size", "4096x4096", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["added"] == len(load(T4).configs)
    store = Store(db, readonly=True)
    assert {tuple(rec.shape) for rec in store.records("convolution")} == {(4096, 4096)}
    store.close()
    r = runner.invoke(main, ["import", str(T4), "--db", str(db), "--problem-size", "4096xx"])
    assert r.exit_code == 2 and "--problem-size must be" in r.output


def test_a_problem_size_other_than_the_files_own_is_refused(tmp_path, saxpy):
    cut = tmp_path / "kt.json"
    cut.write_text(json.dumps({"device_name": "pthread-AMD EPYC", "kernel_name": "saxpy", "problem_size": [4096],
                               "tune_params_keys": ["WG"], "tune_params": {"WG": [16]}, "cache": {}}))
    db = tmp_path / "t.db"
    r = CliRunner().invoke(main, ["import", str(cut), "--db", str(db), "--problem-size", "1024"])
    assert r.exit_code == 2 and "problem size is 4096, not 1024" in r.output and len(r.output.strip().splitlines()) == 1


def test_export_kerneltuner_writes_only_a_new_or_regular_file(tmp_path):
    from db_helpers import make_records

    db = tmp_path / "t.db"
    store = Store(db)
    store.put_many(make_records(shapes=((64, 64, 64),), n=3))
    store.close()
    fifo, folder = tmp_path / "fifo", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    runner = CliRunner()
    for target in (fifo, folder, tmp_path / "no" / "such" / "dir.json"):
        r = runner.invoke(main, ["export", str(target), "--format", "kerneltuner", "--db", str(db)])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and str(target) in r.output, r.output
    assert fifo.is_fifo() and folder.is_dir() and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    out = tmp_path / "mm.json.gz"
    r = runner.invoke(main, ["export", str(out), "--format", "kerneltuner", "--db", str(db), "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    space = load(out)  # gzip: tunesvc reads it back (Kernel Tuner itself reads plain .json only)
    assert space.kernel_name == "matmul" and space.problem_size == (64, 64, 64) and len(space.valid) == 3


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(max_size=30), st.text("0123456789x, \u00b2\u0663", max_size=20)))
def test_any_problem_size_or_shape_is_taken_or_refused_in_one_line(text):
    from tunesvc.cli.exchange import shape_argument
    from tunesvc.errors import UsageError

    try:
        shape = shape_argument(text, "--problem-size")
    except UsageError as e:
        assert "\n" not in str(e) and str(e).startswith("--problem-size must be")
    else:
        assert shape and all(1 <= n <= 2**40 for n in shape)
        assert shape == tuple(int(p) for p in text.replace(",", "x").split("x"))


def test_failed_configs_travel_as_kernel_tuners_errors(tmp_path):
    from db_helpers import CPU, make_records, valid_configs

    from tunesvc.types import Measurement, Record

    db, out = tmp_path / "t.db", tmp_path / "mm.json"
    ok = make_records(shapes=((64, 64, 64),), n=2)
    tpl = templates.get("matmul")
    failed = {"build": "CompilationFailedConfig", "constraint": "InvalidConfig", "wrong_result": "RuntimeFailedConfig",
              "timeout": "RuntimeFailedConfig"}
    configs = valid_configs((64, 64, 64), 2 + len(failed))[2:]
    records = ok + [Record(CPU, tpl.name, tpl.source_hash, "float32", (64, 64, 64), Measurement(c, status, f"{status} here"),
                           "2025-01-01T00:00:00+00:00", "0.1.0", "local") for c, status in zip(configs, failed)]
    store = Store(db)
    store.put_many(records)
    store.close()
    r = CliRunner().invoke(main, ["export", str(out), "--format", "kerneltuner", "--db", str(db), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["failed"] == len(failed), r.output
    cache = read_cache(str(out), open_cache=False)  # Kernel Tuner's reader: each failure is one of its errors
    names = cache["tune_params_keys"]
    errors = {Config({n: e[n] for n in names}): str(e["__error__"]) for e in cache["cache"].values() if "__error__" in e}
    assert errors == {c: failed[s] for c, s in zip(configs, failed)}

    def in_the_file(p):
        return ",".join(str(p[n]) for n in names) in cache["cache"]

    with warnings.catch_warnings():  # Kernel Tuner warns that no parameter names a thread block
        warnings.simplefilter("ignore")
        results, env = kernel_tuner.tune_kernel("matmul", "", (64, 64, 64), [], cache["tune_params"], restrictions=in_the_file,
                                                simulation_mode=True, cache=str(out), strategy="brute_force", quiet=True)
    assert len(results) == len(records) and sum("__error__" in res for res in results) == len(failed)
    fastest = min(ok, key=lambda rec: rec.measurement.time)
    assert Config({n: env["best_config"][n] for n in names}) == fastest.config
    back = tmp_path / "back.db"
    assert import_files([out], back).added == len(records)
    store = Store(back, readonly=True)
    statuses = {rec.config: (rec.measurement.status, rec.measurement.reason) for rec in store.records("matmul")}
    store.close()
    assert {c: statuses[c] for c in configs} == {c: (s, f"{s} here") for c, s in zip(configs, failed)}
