"""Usable devices only: a device whose driver cannot build a trivial kernel is listed apart, with
the reason and the fix, is never the default, and naming it exits 2. Device identity keeps the
hardware and the driver apart. Real drivers throughout; a broken one is made by giving PoCL a
build option it refuses (``POCL_EXTRA_BUILD_FLAGS``), which fails every build as pip's PoCL 3.0
does on CPUs it does not know."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tunesvc import devices, identity
from tunesvc.cli import main
from tunesvc.devices import usable
from tunesvc.types import DeviceInfo, Fingerprint

TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
FAULTS = Path(__file__).parent / "fault_templates"


def run_cli(*args, env=None, timeout=300):
    return subprocess.run([TUNESVC, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def broken_pocl_env(tmp_path):
    env = dict(os.environ, POCL_EXTRA_BUILD_FLAGS="-mcpu=generic", TUNESVC_CACHE_DIR=str(tmp_path / "cache"),
               TUNESVC_DB=str(tmp_path / "t.db"))
    return env


def pocl_ids(cl_infos):
    return [d.id for d in cl_infos if d.fingerprint.driver.startswith("PoCL")]


def test_every_listed_device_built_and_ran_the_trivial_kernel(cl_infos):
    assert cl_infos, "no usable OpenCL device"
    for info in cl_infos:
        assert usable.check_in_process(devices.open_device(info)).usable


def test_verdicts_are_remembered_per_driver(tmp_path, cl_infos):
    env = dict(os.environ, TUNESVC_CACHE_DIR=str(tmp_path / "c"))
    r = run_cli("devices", "--json", env=env)
    assert r.returncode == 0, r.stderr
    verdicts = json.loads((tmp_path / "c" / "drivers.json").read_text())
    # every usable device earned its verdict; others (pip's PoCL 3.0) may be remembered as unusable
    unusable_at_first = {d["id"] for d in json.loads(r.stdout)["unusable"]}
    assert len(verdicts) >= len(cl_infos) and sum(v["usable"] for v in verdicts.values()) >= len(cl_infos)
    assert not unusable_at_first & {d.id for d in cl_infos}
    # a remembered verdict is what discovery believes: it never checks again (until --recheck)
    first = sorted(verdicts)[0]
    verdicts[first] = {"usable": False, "reason": "error: remembered verdict"}
    (tmp_path / "c" / "drivers.json").write_text(json.dumps(verdicts))
    r = run_cli("devices", "--json", env=env)
    data = json.loads(r.stdout)
    assert [d["reason"] for d in data["unusable"]] and "remembered verdict" in data["unusable"][0]["reason"]
    r = run_cli("devices", "--json", "--recheck", env=env)
    assert {d["id"] for d in json.loads(r.stdout)["unusable"]} == unusable_at_first


def test_a_driver_that_cannot_build_is_listed_apart_never_default_and_refused(broken_pocl_env, cl_infos):
    if not pocl_ids(cl_infos):
        pytest.skip("no PoCL driver present to break")
    r = run_cli("devices", "--json", env=broken_pocl_env)
    listed = json.loads(r.stdout) if r.stdout.strip() else None
    text = run_cli("devices", env=broken_pocl_env)
    assert "(unusable)" in text.stdout and "Invalid build option" in text.stdout
    assert "pip install 'tunesvc[intel]'" in text.stdout and "apt-get install pocl-opencl-icd" in text.stdout
    usable_now = [d for d in cl_infos if not d.fingerprint.driver.startswith("PoCL")]
    if usable_now:
        assert r.returncode == 0
        got = {d["id"] for d in listed["unusable"]}  # the broken PoCLs, and any driver unusable anyway
        assert set(pocl_ids(cl_infos)) <= got and not (got - set(pocl_ids(cl_infos))) & {d.id for d in cl_infos}
        assert all(not d["fingerprint"]["driver"].startswith("PoCL") for d in listed["devices"])
        assert next(d for d in listed["devices"] if d["default"])["id"] not in pocl_ids(cl_infos)
    else:  # nothing usable: say so and what to install, non-zero
        assert text.returncode == 1 and "no usable device" in text.stderr
    bad = pocl_ids(cl_infos)[0]
    r = run_cli("tune", "matmul", "--shape", "8x8x8", "--trials", 1, "--device", bad, env=broken_pocl_env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("tuning ")]
    assert r.returncode == 2 and len(lines) == 1 and "cannot build kernels" in lines[0] and "Traceback" not in r.stderr
    r = run_cli("lookup", "matmul", "--shape", "8x8x8", "--device", bad, env=broken_pocl_env)
    assert r.returncode == 2 and "cannot build kernels" in r.stderr


def test_devices_probe_reports_unusable_and_never_aborts(tmp_path, monkeypatch, cl_infos):
    """A remembered 'unusable' verdict (as pip's PoCL 3.0 earns on new CPUs) is listed; --probe
    measures the usable devices and goes on."""
    from tunesvc.measure import roofline

    monkeypatch.setenv("TUNESVC_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(roofline, "COPY_BYTES", 16 * 2**20)
    bad = cl_infos[-1]
    usable._save({usable.verdict_key(bad): {"usable": False, "reason": "error: unknown target CPU 'generic'"}})
    monkeypatch.setattr(devices, "_discovery", None)
    try:
        r = CliRunner().invoke(main, ["devices", "--probe", "--db", str(tmp_path / "p.db")])
        assert r.exit_code == (0 if len(cl_infos) > 1 else 1), r.output
        assert f"{bad.id}  {bad.name}  [{bad.fingerprint.driver}]  (unusable)" in r.output
        assert "unknown target CPU 'generic'" in r.output
        assert ("roofline ceilings: copy bandwidth" in r.output) == (len(cl_infos) > 1)
    finally:
        devices._discovery = None
        devices.discover(refresh=True)


def info(driver: str, kind: str = "cpu", id: str = "opencl:0:0") -> DeviceInfo:
    fp = Fingerprint("opencl", "AMD", kind, "x86 family 25 model 1", "AMD EPYC", driver)
    return DeviceInfo(id, fp, driver, "", "", 2, 1024, (1024, 1, 1), 0, "global", 8, False, True, 1 << 30, 1 << 28)


def test_default_is_a_gpu_else_the_preferred_cpu_driver():
    pip_pocl, deb_pocl, intel = info("PoCL 3.0-rc2", id="opencl:0:0"), info("PoCL 3.1+debian", id="opencl:1:0"), info("Intel OpenCL 2026.2", id="opencl:2:0")
    other = info("Clover 1.0", id="opencl:3:0")
    assert devices.default_device([pip_pocl, deb_pocl, intel, other]) == intel
    assert devices.default_device([pip_pocl, deb_pocl, other]) == deb_pocl
    assert devices.default_device([other, pip_pocl]) == pip_pocl
    gpu = info("NVIDIA CUDA 580", kind="gpu", id="opencl:4:0")
    assert devices.default_device([pip_pocl, intel, gpu]) == gpu


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9R45 96-Core Processor
cpu MHz\t\t: 3700.000
flags\t\t: fpu avx2 fma avx512f

processor\t: 1
vendor_id\t: AuthenticAMD
"""


def test_the_same_chip_is_the_same_hardware_under_every_driver():
    cpu = identity.parse_cpuinfo(CPUINFO)
    assert cpu["cpus"] == 2 and "avx512f" in cpu["flags"] and cpu["vendor"] == "AMD"
    model = cpu["model_name"]
    names = ["pthread-znver5-AMD EPYC 9R45 96-Core Processor", "pthread-AMD EPYC 9R45 96-Core Processor", model]
    assert {identity.cpu_hardware_name(n, model) for n in names} == {model}
    # Intel's runtime says vendor Intel for an AMD chip: the hardware vendor is the chip's
    assert identity.cpu_vendor(model, "Intel(R) Corporation", cpu) == "AMD"
    assert identity.cpu_architecture(cpu) == "x86 family 26 model 2"
    assert identity.driver_label("Portable Computing Language", "3.1+debian") == "PoCL 3.1+debian"
    assert identity.driver_label("Intel(R) OpenCL", "2026.22.10.0.01_160000").startswith("Intel OpenCL 2026")


def test_drivers_of_one_chip_share_hardware_and_differ_in_driver(cl_infos):
    if len({d.fingerprint.driver for d in cl_infos}) < 2:
        pytest.skip("one OpenCL CPU driver present")
    cpus = [d.fingerprint for d in cl_infos if d.device_type == "cpu"]
    assert all(identity.relation(a, b) == "family" for a in cpus for b in cpus if a != b)
    assert len({fp.key for fp in cpus}) == len(cpus)


def test_intel_runtime_is_registered_by_tunesvc():
    from tunesvc.devices import drivers

    lib = drivers.intel_cpu_library()
    if lib is None:
        pytest.skip("intel-opencl-rt is not installed (pip install 'tunesvc[intel]')")
    code = ("import tunesvc.devices as d; f = d.discover(); print([x.fingerprint.driver for x in f.devices]); "
            "print([(x.fingerprint.driver, why) for x, why in f.unusable])")
    env = {k: v for k, v in os.environ.items() if k not in ("OCL_ICD_VENDORS", "LD_LIBRARY_PATH")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Intel OpenCL" in out.stdout.splitlines()[0], out.stdout  # the second line says why not


def test_a_lock_left_in_the_binary_cache_by_a_killed_process_never_fails_a_build(tmp_path, monkeypatch, each_cl_device):
    """pyopencl caches Intel's builds behind a lock file; a process killed while it held it left the
    lock, and every later build waited a minute and failed (the device was then listed unusable)."""
    from tunesvc.devices import opencl

    monkeypatch.setenv("TUNESVC_CACHE_DIR", str(tmp_path / "c"))
    lock = tmp_path / "c" / "opencl-binaries" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    old = time.time() - 2 * opencl.STALE_LOCK_SECONDS
    os.utime(lock, (old, old))
    assert usable.check_in_process(each_cl_device).usable
    assert not lock.exists()
    # a cache folder that cannot be made: builds go on without a cache
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "opencl-binaries").write_text("not a folder")
    monkeypatch.setenv("TUNESVC_CACHE_DIR", str(tmp_path / "c2"))
    assert opencl.binary_cache() is False
    assert usable.check_in_process(each_cl_device).usable


def test_the_binary_cache_is_trimmed_oldest_first_once_over_its_limit(tmp_path, monkeypatch, each_cl_device):
    """Every config tuned on Intel's runtime leaves a binary; a long-running tuner must not fill the disk."""
    from tunesvc.devices import opencl

    folder = tmp_path / "c" / "opencl-binaries"
    for i in range(8):  # eight entries of 100 KiB, entry 0 the oldest
        entry = folder / f"entry{i}"
        entry.mkdir(parents=True)
        (entry / "binary").write_bytes(b"x" * 100 * 1024)
        t = time.time() - 1000 + 10 * i
        os.utime(entry / "binary", (t, t))
    (folder / "lock").touch()  # a fresh lock is left alone
    assert opencl.prune_binary_cache(folder, 2 * 2**20) == 0  # 800 KiB under a 2 MiB limit: nothing
    assert opencl.prune_binary_cache(folder, 500 * 1024) == 5  # down to 3/4 of 500 KiB: the three newest stay
    assert sorted(p.name for p in folder.iterdir()) == ["entry5", "entry6", "entry7", "lock"]
    (folder / "lock").unlink()  # (a fresh lock would make pyopencl wait its minute: the test above)
    # through the build path: the limit from the environment, the cache trimmed, the build fine
    monkeypatch.setenv("TUNESVC_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("TUNESVC_BINARY_CACHE_MB", "0.2")
    monkeypatch.setattr(opencl, "_pruned", set())
    assert opencl.binary_cache() == str(folder)
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 0.75 * 0.2 * 2**20
    assert usable.check_in_process(each_cl_device).usable
    monkeypatch.setenv("TUNESVC_BINARY_CACHE_MB", "lots")  # a bad setting falls back to the default
    assert opencl._limit_bytes() == opencl.BINARY_CACHE_MB * 2**20


@pytest.mark.parametrize("sig, remembered", [(signal.SIGSEGV, True), (signal.SIGABRT, True),
                                             (signal.SIGTERM, False), (signal.SIGKILL, False)])
def test_a_check_killed_from_outside_is_not_remembered_as_a_crash(sig, remembered):
    child = subprocess.Popen([sys.executable, "-c", f"import os; os.kill(os.getpid(), {int(sig)})"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    verdict = usable._collect(child)
    assert not verdict.usable and verdict.remember is remembered
    assert ("crashed" in verdict.reason) is remembered and (sig.name in verdict.reason) is not remembered


def test_a_tune_where_nothing_runs_correctly_fails_with_the_reason(tmp_path, cl_info):
    env = dict(os.environ, TUNESVC_DB=str(tmp_path / "t.db"))
    r = run_cli("tune", FAULTS / "allwrong.py", "--strategy", "grid", "--device", cl_info.id, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no config ran correctly" in r.stdout and "'wrong_result'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("tune", FAULTS / "allwrong.py", "--strategy", "grid", "--device", cl_info.id, "--json", env=env)
    data = json.loads(r.stdout)
    assert r.returncode == 1 and data["status"] == "failed" and "wrong_result" in data["error"]


def test_an_import_where_every_record_is_rejected_exits_2(tmp_path):
    shipped = Path(__file__).parents[1] / "tuning_db"
    lines = next(shipped.glob("*.jsonl")).read_text().splitlines()
    bad = [lines[0]] + [json.dumps(dict(json.loads(ln), status="bogus")) for ln in lines[1:4]]
    (tmp_path / "bad.jsonl").write_text("\n".join(bad) + "\n")
    r = run_cli("import", tmp_path / "bad.jsonl", "--db", tmp_path / "t.db", "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["status"] == "rejected"
    assert r.stderr.count("\n") == 1 and "every record was rejected" in r.stderr


def test_another_drivers_records_answer_as_family_never_exact(db_path, cl_infos):
    import tunesvc
    from tunesvc.tuning.tuner import tune

    cpus = [d for d in cl_infos if d.device_type == "cpu"]
    if len(cpus) < 2:
        pytest.skip("one OpenCL CPU driver present")
    a, b = cpus[0], cpus[1]
    tune("matmul", (24, 24, 24), "float32", a, db=db_path, strategy="grid", trials=2, isolate=False)
    assert tunesvc.lookup("matmul", (24, 24, 24), device=a, db=db_path).level == "exact"
    res = tunesvc.lookup("matmul", (24, 24, 24), device=b, db=db_path)
    assert res.level == "family" and res.device_key == b.fingerprint.key
    assert any(f"another driver ({a.fingerprint.driver}" in line for line in res.explain), res.explain
