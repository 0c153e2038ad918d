"""The cuda-python binding (``tunesvc[cuda]``): NVRTC for real, the driver through a stand-in.

NVRTC needs no GPU, so every template's CUDA form is built here exactly as the backend builds it
for an H100/H200 (sm_90): in memory, with the plan's defines as flags, the C headers NVRTC lacks
given in memory and cuda_fp16.h from the nvidia-cuda-runtime wheel. The driver API cannot run
without an NVIDIA driver: where it is absent (here) the one-line error is checked for real, and
detection is checked through a stand-in ``cuda.bindings`` (said where used).
"""

from __future__ import annotations

import ctypes
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tunesvc import templates
from tunesvc.errors import BuildError, LaunchError

nvrtc_backend = pytest.importorskip("tunesvc.devices.cuda_nvrtc")
try:
    nvrtc_backend.nvrtc_version()
except Exception as e:  # noqa: BLE001 - cuda-python or NVRTC not installed: pip install 'tunesvc[cuda]'
    pytest.skip(f"NVRTC cannot be loaded: {e}", allow_module_level=True)

from test_cuda_backend import cli, run_py  # noqa: E402 - after the skip: the same fresh-interpreter helpers
from test_cuda_dialect import all_cases  # noqa: E402

ARCH = "sm_90"  # H100 and H200


def build(name, shape, dtype, config, arch=ARCH):
    tpl = templates.get(name)
    return nvrtc_backend.compile_source(tpl.render("cuda"), tpl.plan(config, shape, dtype).defines, arch)


@pytest.fixture(scope="module")
def built():
    """{label: (template name, config, image or the BuildError's text)} for the cases test_cuda_dialect
    compiles with nvcc: every parameter value of every template, float32 and float16, two shapes."""
    out = {}
    for label, name, shape, dtype, config in all_cases():
        try:
            out[label] = (name, config, build(name, shape, dtype, config))
        except BuildError as e:
            out[label] = (name, config, str(e))
    return out


def test_nvrtc_builds_every_template_and_sampled_config_to_a_cubin(built):
    broken = [f"{label} {dict(cfg)}: {img}" for label, (_, cfg, img) in built.items() if isinstance(img, str)]
    assert not broken, "NVRTC build failures:\n" + "\n".join(broken)
    assert len(built) >= 40 and any("float16" in label for label in built)
    for label, (name, _, (image, cubin)) in built.items():
        assert cubin and image[:4] == b"\x7fELF", label  # sm_90 is known to this NVRTC: machine code, no JIT
        for kernel in templates.get(name).kernel_names:  # KERNEL is extern "C": plain names in the symbol table
            assert b"\0" + kernel.encode() + b"\0" in image, f"{label}: no symbol {kernel!r}"


def test_an_architecture_newer_than_nvrtc_gets_ptx_for_the_driver_to_finish():
    newest = max(nvrtc_backend.supported_architectures())
    assert nvrtc_backend.target(f"sm_{newest}") == (f"sm_{newest}", True)
    assert nvrtc_backend.target(f"sm_{newest + 1}") == (f"compute_{newest}", False)
    tpl = templates.get("matmul")
    image, cubin = build("matmul", tpl.default_shape, "float32", tpl.default_config(), f"sm_{newest + 1}")
    text = image.rstrip(b"\0").decode()
    assert not cubin and f".target sm_{newest}" in text and ".entry matmul(" in text


def test_an_architecture_older_than_any_nvrtc_knows_is_a_build_error_naming_them():
    with pytest.raises(BuildError, match=r"cannot compile for sm_10 \(it knows sm_"):
        nvrtc_backend.target("sm_10")


def test_a_broken_source_is_a_one_line_build_error_naming_the_fault():
    source = templates.base.prelude("cuda") + "KERNEL void k(GLOBAL real* x) { x[LID(0)] = undefined_name; }\n"
    with pytest.raises(BuildError) as e:
        nvrtc_backend.compile_source(source, {}, ARCH)
    assert "undefined_name" in str(e.value) and "\n" not in str(e.value)


def test_defines_reach_the_compiler_as_flags():
    source = templates.base.prelude("cuda") + "#if WIDTH != 3\n#error WIDTH was not passed\n#endif\nKERNEL void k(GLOBAL real* x) { x[0] = WIDTH; }\n"
    image, _ = nvrtc_backend.compile_source(source, {"WIDTH": 3}, ARCH)
    assert image[:4] == b"\x7fELF"
    with pytest.raises(BuildError, match="WIDTH was not passed"):
        nvrtc_backend.compile_source(source, {"WIDTH": 4}, ARCH)


def test_float16_without_cuda_fp16_h_says_what_to_install(monkeypatch):
    """NVRTC itself fails here; only the lookup of the header folder is made to find nothing."""
    monkeypatch.setattr(nvrtc_backend, "fp16_include", lambda: None)
    source = templates.base.prelude("cuda") + "KERNEL void k(GLOBAL real* x) { x[0] = TO_REAL(1.0f); }\n"
    with pytest.raises(BuildError, match=r"cuda_fp16.h not found .*tunesvc\[cuda\]"):
        nvrtc_backend.compile_source(source, {"TS_FP16": 1}, ARCH)


# ---- launch arguments -------------------------------------------------------------------------
def test_kernel_params_hold_each_argument_in_its_own_c_type():
    class Buf(nvrtc_backend.Buffer):
        def __del__(self):  # nothing was allocated
            pass

    buf = Buf(None, 0xDEADBEEF000, 64)
    storage, pointers = nvrtc_backend.kernel_params([buf, np.int32(-7), np.float32(0.5), np.uint32(9)])
    assert pointers.dtype == np.uint64 and len(pointers) == 4
    read = lambda i, ctype: ctype.from_address(int(pointers[i])).value  # noqa: E731
    assert read(0, ctypes.c_uint64) == 0xDEADBEEF000
    assert read(1, ctypes.c_int32) == -7 and read(2, ctypes.c_float) == 0.5 and read(3, ctypes.c_uint32) == 9
    with pytest.raises(LaunchError, match="neither a buffer nor a numpy scalar"):
        nvrtc_backend.kernel_params([3])


# ---- the driver ---------------------------------------------------------------------------------
def test_without_the_nvidia_driver_devices_says_so_in_one_line():
    """Real: this machine has cuda-python but no libcuda.so."""
    if any(Path(p, "libcuda.so.1").exists() for p in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")):
        pytest.skip("the NVIDIA driver is installed here")
    r = cli("devices", binding="cuda-python")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("cuda")]
    assert lines == ["cuda: cuda-python is installed but cannot load the NVIDIA driver (libcuda.so not found); install the NVIDIA driver"]


# MOCK: the driver API cannot answer without an NVIDIA driver and GPU, so a stand-in ``cuda.bindings``
# package is put first on the path. Its driver answers the queries the backend makes with an H100's
# values, or fails as a machine without a GPU fails; its nvrtc answers only the version.
FAKE_DRIVER = '''
import enum
MODE = {mode!r}
class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_NO_DEVICE = 100
class CUdevice_attribute(enum.IntEnum):
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 1
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 2
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 3
    CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 4
    CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X = 5
    CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y = 6
    CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z = 7
    CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8
_ATTR = {{1: 9, 2: 0, 3: 132, 4: 1024, 5: 1024, 6: 1024, 7: 64, 8: 49152}}
OK = CUresult.CUDA_SUCCESS
def cuInit(flags):
    return (CUresult.CUDA_ERROR_NO_DEVICE if MODE == "no_gpu" else OK,)
def cuGetErrorString(status): return (OK, b"no CUDA-capable device is detected")
def cuDriverGetVersion(): return (OK, 13000)
def cuDeviceGetCount(): return (OK, 0 if MODE == "zero" else 1)
def cuDeviceGet(i): return (OK, i)
def cuDeviceGetName(n, dev): return (OK, b"NVIDIA H100 80GB HBM3" + bytes(n - 21))
def cuDeviceTotalMem(dev): return (OK, 85520809984)
def cuDeviceGetAttribute(attr, dev): return (OK, _ATTR[int(attr)])
'''
FAKE_NVRTC = '''
def nvrtcVersion(): return (0, 12, 9)
'''


def fake_cuda_bindings(tmp_path: Path, mode: str) -> Path:
    root = tmp_path / mode
    pkg = root / "cuda" / "bindings"
    pkg.mkdir(parents=True)
    (root / "cuda" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "driver.py").write_text(textwrap.dedent(FAKE_DRIVER.format(mode=mode)))
    (pkg / "nvrtc.py").write_text(FAKE_NVRTC)
    return root


def test_detection_fills_the_fingerprint_and_limits(tmp_path):
    code = "import json; from tunesvc.devices import cuda; print(json.dumps([d.to_dict() for d in cuda.list_devices()]))"
    r = run_py(code, fake_cuda_bindings(tmp_path, "ok"), binding="cuda-python")
    assert r.returncode == 0, r.stderr
    (d,) = json.loads(r.stdout)
    fp = d["fingerprint"]
    assert d["id"] == "cuda:0"
    assert (fp["backend"], fp["vendor"], fp["device_type"], fp["architecture"], fp["name"]) == ("cuda", "NVIDIA", "gpu", "sm_90", "NVIDIA H100 80GB HBM3")
    assert (d["compute_units"], d["max_work_group_size"], d["max_work_item_sizes"], d["local_mem_size"]) == (132, 1024, [1024, 1024, 64], 49152)
    assert d["version"].startswith("CUDA 13.0 driver API, cuda-python ") and d["version"].endswith(", NVRTC 12.9")
    assert d["c_version"] == "compute capability 9.0" and d["fp16"] and d["fp64"]


def test_both_bindings_give_one_device_the_same_fingerprint(tmp_path):
    """A result tuned through pycuda answers a lookup through cuda-python, and back."""
    from test_cuda_backend import fake_pycuda

    code = "import json; from tunesvc.devices import cuda; print(json.dumps(cuda.list_devices()[0].fingerprint.key))"
    a = run_py(code, fake_cuda_bindings(tmp_path, "ok"), binding="cuda-python")
    b = run_py(code, fake_pycuda(tmp_path, "ok"), binding="pycuda")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)


@pytest.mark.parametrize("mode, why", [
    ("no_gpu", "the CUDA driver found no usable GPU: cuInit failed: CUDA_ERROR_NO_DEVICE"),
    ("zero", "the CUDA driver is loaded but sees no GPU"),
])
def test_devices_cli_explains_a_missing_gpu_in_one_line(tmp_path, mode, why):
    r = cli("devices", pythonpath=fake_cuda_bindings(tmp_path, mode), binding="cuda-python")
    assert r.returncode == 0, r.stderr
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("cuda")] == [f"cuda: {why}"]
    assert any(ln.startswith("opencl:") for ln in r.stdout.splitlines())
