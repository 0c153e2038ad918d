"""The CUDA backend: graceful absence of any binding (real: both are hidden from a fresh
interpreter), detection through a stand-in pycuda (the only way to reach that code without a
GPU; said where used), and tests marked ``cuda`` that run real kernels on an NVIDIA GPU through
whichever binding is installed, skipping cleanly without one. The cuda-python binding's own
tests (NVRTC builds for real here) are in test_cuda_nvrtc.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tunesvc.devices import cuda as cuda_backend
from tunesvc.errors import BackendError, LaunchError, MissingDependencyError

REPO = Path(__file__).resolve().parents[1]

#: Run first in a child: both CUDA bindings cannot be imported there, as on a machine without them.
HIDE_BINDINGS = """
import sys
class _Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('cuda', 'pycuda'):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _Hidden())
"""
NO_BINDING = ("cuda: no CUDA binding is installed: pip install 'tunesvc[cuda]' (NVIDIA's cuda-python and NVRTC as binary wheels: "
              "the NVIDIA driver is all it needs), or 'tunesvc[pycuda]' where the CUDA toolkit is installed")


def run_py(code: str, pythonpath: Path | None = None, hide: bool = False, binding: str | None = None) -> subprocess.CompletedProcess:
    """A fresh interpreter, so module state and caches of this one do not leak in; with ``hide``
    no CUDA binding can be imported in it; ``binding`` sets $TUNESVC_CUDA_BINDING."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in [pythonpath, REPO] if p)
    env.pop("TUNESVC_CUDA_BINDING", None)
    if binding:
        env["TUNESVC_CUDA_BINDING"] = binding
    return subprocess.run([sys.executable, "-c", (HIDE_BINDINGS if hide else "") + code], capture_output=True, text=True, env=env, timeout=120)


def cli(*args: str, pythonpath: Path | None = None, hide: bool = False, binding: str | None = None) -> subprocess.CompletedProcess:
    return run_py(f"import sys; from tunesvc.cli import main; sys.exit(main({list(args)!r}))", pythonpath, hide, binding)


# ---- graceful absence: real, both bindings hidden from a fresh interpreter ------------------
def test_import_tunesvc_never_imports_a_driver_and_lookup_works_without_a_binding():
    """``import tunesvc`` imports no driver or binding, even where one is installed (cuda-python is,
    in the dev extra; its own .pth imports the empty ``cuda`` namespace at start-up); a lookup
    with no binding at all answers."""
    binding = "m.split('.')[0] == 'pycuda' or m.startswith('cuda.')"
    r = run_py(f"import sys, tunesvc; print(sorted(m for m in sys.modules if {binding} or m.split('.')[0] in ('pyopencl', 'optuna')))")
    assert r.returncode == 0 and r.stdout.split() == ["[]"], r.stdout + r.stderr
    r = run_py("import tunesvc; print(tunesvc.lookup('matmul', (64, 64, 64)).level)", hide=True)
    assert r.returncode == 0 and r.stdout.split() == ["default"], r.stdout + r.stderr


def test_list_devices_says_in_one_line_what_to_install():
    r = run_py("from tunesvc.devices import cuda\ntry:\n    cuda.list_devices()\nexcept Exception as e:\n    print(type(e).__name__, e)", hide=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "MissingDependencyError " + NO_BINDING.removeprefix("cuda: ")


def test_devices_cli_lists_opencl_and_explains_missing_cuda_in_one_line():
    r = cli("devices", hide=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("opencl:") for ln in lines), r.stdout
    assert [ln for ln in lines if ln.startswith("cuda")] == [NO_BINDING]
    js = json.loads(cli("devices", "--json", hide=True).stdout)
    assert js["unavailable"]["cuda"] == NO_BINDING.removeprefix("cuda: ")
    assert all(d["fingerprint"]["backend"] == "opencl" for d in js["devices"])


@pytest.mark.parametrize("value, why", [
    ("pycuda", "TUNESVC_CUDA_BINDING=pycuda but pycuda is not installed: pip install 'tunesvc[cuda]'"),
    ("cuda-python", "TUNESVC_CUDA_BINDING=cuda-python but cuda.bindings is not installed: pip install 'tunesvc[cuda]'"),
    ("cupy", "TUNESVC_CUDA_BINDING='cupy' names no CUDA binding: expected one of cuda-python, pycuda"),
])
def test_a_binding_chosen_by_the_environment_that_cannot_be_used_is_one_line(value, why):
    r = cli("devices", hide=True, binding=value)
    assert r.returncode == 0, r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("cuda")]
    assert line.startswith(f"cuda: {why}"), line


def test_opencl_tuning_and_lookup_work_without_a_cuda_binding(tmp_path, cl_info):
    db = str(tmp_path / "t.db")
    r = cli("tune", "matmul", "--shape", "16x16x16", "--trials", "2", "--device", cl_info.id, "--db", db, "--json", "--no-isolation", hide=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["best"]["status"] == "ok"
    r = cli("lookup", "matmul", "--shape", "16x16x16", "--device", cl_info.id, "--db", db, hide=True)
    assert r.returncode == 0 and ": exact" in r.stdout, r.stdout + r.stderr


def test_asking_for_a_cuda_device_is_a_usage_error_naming_the_known_ones():
    r = cli("tune", "matmul", "--shape", "16x16x16", "--device", "cuda:0", "--trials", "1", "--json", hide=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no device matches 'cuda:0'" in r.stderr and "opencl:" in r.stderr
    assert NO_BINDING in r.stderr


# ---- detection through a stand-in pycuda ---------------------------------------------------
# MOCK: pycuda cannot run without an NVIDIA driver and GPU, so these tests put a small fake
# ``pycuda`` package first on the path. It answers the driver queries the backend makes with
# an H100's values, or fails the way a real machine without a driver or GPU fails.
FAKE_DRIVER = '''
class Error(Exception): pass
class CompileError(Error): pass
MODE = {mode!r}
if MODE == "no_libcuda":
    raise ImportError("libcuda.so.1: cannot open shared object file: No such file or directory")
class device_attribute:
    MULTIPROCESSOR_COUNT, MAX_THREADS_PER_BLOCK, MAX_BLOCK_DIM_X, MAX_BLOCK_DIM_Y, MAX_BLOCK_DIM_Z, MAX_SHARED_MEMORY_PER_BLOCK = range(6)
_ATTR = {{0: 132, 1: 1024, 2: 1024, 3: 1024, 4: 64, 5: 49152}}
def init():
    if MODE == "no_gpu":
        raise Error("cuInit failed: no CUDA-capable device is detected")
def get_driver_version(): return 13000
def get_version(): return (12, 8, 0)
class Device:
    def __init__(self, i): self.i = i
    @staticmethod
    def count(): return 0 if MODE == "zero" else 1
    def name(self): return "NVIDIA H100 80GB HBM3"
    def compute_capability(self): return (9, 0)
    def total_memory(self): return 85520809984
    def get_attribute(self, a): return _ATTR[a]
'''


def fake_pycuda(tmp_path: Path, mode: str) -> Path:
    pkg = tmp_path / mode / "pycuda"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "driver.py").write_text(textwrap.dedent(FAKE_DRIVER.format(mode=mode)))
    return tmp_path / mode


@pytest.mark.parametrize("mode, why", [
    ("no_libcuda", "pycuda is installed but cannot load the NVIDIA driver (libcuda.so.1: cannot open shared object file"),
    ("no_gpu", "the CUDA driver found no usable GPU: cuInit failed: no CUDA-capable device is detected"),
    ("zero", "the CUDA driver is loaded but sees no GPU"),
])
def test_devices_cli_explains_a_missing_driver_or_gpu_in_one_line(tmp_path, mode, why):
    r = cli("devices", pythonpath=fake_pycuda(tmp_path, mode), binding="pycuda")
    assert r.returncode == 0, r.stderr
    cuda_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("cuda")]
    assert len(cuda_lines) == 1 and cuda_lines[0].startswith(f"cuda: {why}"), r.stdout
    assert any(ln.startswith("opencl:") for ln in r.stdout.splitlines())


def test_detection_fills_the_fingerprint_and_limits(tmp_path):
    code = ("import json; from tunesvc.devices import cuda; "
            "print(json.dumps([d.to_dict() for d in cuda.list_devices()]))")
    r = run_py(code, fake_pycuda(tmp_path, "ok"), binding="pycuda")
    assert r.returncode == 0, r.stderr
    (d,) = json.loads(r.stdout)
    assert d["id"] == "cuda:0"
    fp = d["fingerprint"]
    assert (fp["backend"], fp["vendor"], fp["device_type"], fp["architecture"], fp["name"]) == ("cuda", "NVIDIA", "gpu", "sm_90", "NVIDIA H100 80GB HBM3")
    assert fp["driver"]  # the kernel module's version where /proc says it, else "CUDA 13.0"
    assert (d["compute_units"], d["max_work_group_size"], d["max_work_item_sizes"], d["local_mem_size"]) == (132, 1024, [1024, 1024, 64], 49152)
    assert d["version"] == "CUDA 13.0 driver API, pycuda built for CUDA 12.8"
    assert d["c_version"] == "compute capability 9.0" and d["fp16"] and d["fp64"]


def test_devices_cli_lists_a_cuda_device_beside_opencl(tmp_path, monkeypatch):
    """The fake pycuda describes a device but cannot build (a mock: no CUDA GPU here): until a
    verdict says it is usable it is listed apart; with one remembered, it is the default."""
    monkeypatch.setenv("TUNESVC_CACHE_DIR", str(tmp_path / "cache"))
    fake = fake_pycuda(tmp_path, "ok")
    r = cli("devices", pythonpath=fake, binding="pycuda")
    assert r.returncode == 0, r.stderr
    assert "cuda:0  NVIDIA H100 80GB HBM3  [" in r.stdout and "(unusable)" in r.stdout
    assert any(ln.startswith("opencl:") and "(default)" in ln for ln in r.stdout.splitlines())
    seed = run_py("from tunesvc.devices import _all_devices, usable; "
                  "usable._save({usable.verdict_key(d): {'usable': True, 'reason': ''} for d in _all_devices()[0] if d.id == 'cuda:0'})",
                  fake, binding="pycuda")
    assert seed.returncode == 0, seed.stderr
    r = cli("devices", pythonpath=fake, binding="pycuda")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert any(ln.startswith("cuda:0  NVIDIA H100 80GB HBM3") and ln.endswith("(default)") for ln in out.splitlines())  # the first GPU
    assert "architecture sm_90" in out and "compute units 132" in out and "local memory 48 KiB (local)" in out
    assert any(ln.startswith("opencl:") for ln in out.splitlines())
    assert not any(ln.startswith("cuda:") and "pycuda" in ln for ln in out.splitlines())


# ---- pure helpers -----------------------------------------------------------------------------
def test_grid_is_global_over_local_per_dimension_padded_to_three():
    assert cuda_backend.grid_of((256,), (64,)) == ((4, 1, 1), (64, 1, 1))
    assert cuda_backend.grid_of((64, 32), (8, 4)) == ((8, 8, 1), (8, 4, 1))


@pytest.mark.parametrize("g, l", [((100,), (64,)), ((64, 64), (8,)), ((0,), (1,)), ((1, 1, 1, 1), (1, 1, 1, 1))])
def test_grid_rejects_what_opencl_would_reject(g, l):
    with pytest.raises(LaunchError):
        cuda_backend.grid_of(g, l)


def test_kernel_module_version_is_read_from_the_driver_file(tmp_path):
    f = tmp_path / "version"
    f.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (root@host)\nGCC version: gcc 12.3\n")
    assert cuda_backend.kernel_module_version(f) == "580.159.04"
    assert cuda_backend.kernel_module_version(tmp_path / "absent") == ""


# ---- on a real NVIDIA GPU ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu():
    """The first CUDA device, opened; skips with the reason where there is none."""
    try:
        infos = cuda_backend.list_devices()
    except (MissingDependencyError, BackendError) as e:
        pytest.skip(f"no CUDA device: {e}")
    from tunesvc.devices import open_device

    return open_device(infos[0])


def _evaluate(gpu, name, shape, dtype, config=None):
    from tunesvc import templates
    from tunesvc.measure.evaluator import Evaluator

    tpl = templates.get(name)
    return Evaluator(gpu, tpl, tpl.parse_shape(shape), dtype).evaluate(config or tpl.default_config())


@pytest.mark.cuda
def test_gpu_detection_matches_the_driver(gpu):
    """Against nvidia-smi, which asks the driver without either binding."""
    smi = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap,name", "--format=csv,noheader", "-i", "0"],
                         capture_output=True, text=True, timeout=60)
    if smi.returncode != 0:
        pytest.skip(f"nvidia-smi did not answer: {smi.stderr.strip()[:200]}")
    cap, name = (x.strip() for x in smi.stdout.strip().split(",", 1))
    info = gpu.info
    assert info.fingerprint.architecture == "sm_" + cap.replace(".", "") and info.name == " ".join(name.split())
    assert info.compute_units > 0 and info.max_work_group_size >= 256 and info.local_mem_size >= 48 * 1024


@pytest.mark.cuda
def test_gpu_default_config_of_every_template_verifies(gpu):
    """Every registered template runs its default config correctly through the CUDA dialect."""
    from tunesvc import templates

    for name in templates.names():
        tpl = templates.get(name)
        small = tuple(min(d, 257) for d in tpl.default_shape)
        for dtype in tpl.dtypes:
            m = _evaluate(gpu, name, small, dtype)
            assert m.status in ("ok", "constraint"), f"{name} {dtype} {small}: {m.status} {m.reason}"
            assert m.status == "constraint" or m.timing.median > 0


@pytest.mark.cuda
@pytest.mark.parametrize("vw, local", [(1, 0), (2, 0), (4, 0), (8, 0), (4, 1)])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gpu_matmul_vector_widths_and_shared_memory(gpu, vw, local, dtype):
    from tunesvc.types import Config

    cfg = Config(MDIM=16, NDIM=8, KWG=16 if local else 8, WPTM=4, WPTN=8, VW=vw, LOCAL=local, UNROLL=4, PACKB=0)
    for shape in ("256x256x256", "67x72x33"):  # aligned, and ragged edges (N a multiple of 8 only)
        m = _evaluate(gpu, "matmul", shape, dtype, cfg)
        assert m.ok, f"{shape}: {m.status} {m.reason}"


@pytest.mark.cuda
def test_gpu_build_error_is_a_build_failure_not_a_crash(gpu):
    from tunesvc.errors import BuildError

    with pytest.raises(BuildError) as e:
        gpu.build("KERNEL void k(GLOBAL float* x) { x[0] = nope; }", {}, ["k"])
    assert "nope" in str(e.value) or "error" in str(e.value).lower()


@pytest.mark.cuda
def test_gpu_tune_stores_cuda_records_and_lookup_finds_them(gpu, tmp_path):
    from tunesvc import lookup, tune

    db = tmp_path / "gpu.db"
    result = tune("matmul", (256, 256, 256), "float32", gpu.info, db=db, strategy="random", trials=6, seed=1)
    assert result.best is not None and result.best.ok
    found = lookup("matmul", (256, 256, 256), "float32", gpu.info, db)
    assert found.level == "exact" and found.config == result.best.config


@pytest.mark.cuda
def test_gpu_event_timing_scales_with_work(gpu):
    from tunesvc.types import Config

    cfg = Config(MDIM=16, NDIM=16, KWG=16, WPTM=4, WPTN=4, VW=4, LOCAL=1, UNROLL=4, PACKB=0)
    small = _evaluate(gpu, "matmul", "512x512x512", "float32", cfg)
    big = _evaluate(gpu, "matmul", "2048x2048x2048", "float32", cfg)
    assert small.ok and big.ok
    assert big.time > 8 * small.time  # 64x the work; a timer that measured launch overhead would not show it
    assert np.isfinite(big.gflops)
