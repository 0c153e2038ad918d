"""The CUDA form of every registered template compiles to PTX with nvcc.

No GPU is needed: ``nvcc -ptx`` checks the CUDA dialect (dialect/cuda.h plus
each template's one source) for a sample of valid configs that together take
every value of every parameter (so each vector width, local memory on and
off), in float32 and float16, at the default shape and at a small odd one.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tunesvc import templates
from tunesvc.errors import InvalidShapeError
from tunesvc.templates.base import Context

NVCC = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
ARCH = "sm_80"
BATCHES = 2  # nvcc processes at a time: the CI machine has two cores

pytestmark = pytest.mark.skipif(not Path(NVCC).exists(), reason="nvcc not found (looked on PATH and at /usr/local/cuda/bin/nvcc): the CUDA toolkit is not installed")


#: Parameters that change which dialect constructs a kernel uses (vector loads of each width: VW, DV;
#: shared memory: LOCAL, LKV): every value of these is compiled in every dtype and shape, the rest once.
DIALECT_PARAMS = ("VW", "DV", "LOCAL", "LKV")


def covering_sample(tpl, shape, dtype, params=None):
    """The default config plus valid configs that together take every value (of ``params``, or of
    every parameter) that a valid config can take: greedy set cover, the config adding most first."""
    ctx = Context(shape, dtype, None)
    valid = [c for c in tpl.all_configs() if tpl.is_valid(c, ctx)]
    pairs = lambda c: {(k, v) for k, v in c.items() if params is None or k in params}  # noqa: E731
    want = set().union(*(pairs(c) for c in valid)) if valid else set()
    picked = [tpl.default_config()] if tpl.is_valid(tpl.default_config(), ctx) else []
    seen = set().union(*(pairs(c) for c in picked)) if picked else set()
    while not want <= seen:
        best = max(valid, key=lambda c: len(pairs(c) - seen))
        picked.append(best)
        seen |= pairs(best)
    return picked


def small_shape(tpl):
    """A small shape with odd sizes (edge paths), or None if the template rejects it."""
    try:
        return tpl.parse_shape(tuple(min(d, 33) | 1 for d in tpl.default_shape))
    except InvalidShapeError:
        return None


def cases(tpl, source_seen: bool = False):
    """(label, template name, shape, dtype, config) to compile for one template: every parameter
    value at the default shape in the first dtype; the dialect parameters' values elsewhere. A
    template whose source file an earlier one already covered (reduce_sum, reduce_max, ...: one
    source, other defines) gets its dialect parameters' values at the default shape only."""
    out = []
    shapes = [tpl.default_shape] + [s for s in [small_shape(tpl)] if s and s != tpl.default_shape]
    for shape in shapes[:1] if source_seen else shapes:
        for dtype in tpl.dtypes[:1] if source_seen else tpl.dtypes:
            full = not source_seen and shape == tpl.default_shape and dtype == tpl.dtypes[0]
            for i, config in enumerate(covering_sample(tpl, shape, dtype, None if full else DIALECT_PARAMS)):
                out.append((f"{tpl.name}-{'x'.join(map(str, shape))}-{dtype}-{i}", tpl.name, shape, dtype, config))
    return out


def all_cases():
    """The cases of every registered template, in name order."""
    out, sources = [], set()
    for name in templates.names():
        tpl = templates.get(name)
        out += cases(tpl, tpl.source_path() in sources)
        sources.add(tpl.source_path())
    return out


def cuda_source(tpl, shape, dtype, config) -> str:
    """The program the CUDA backend builds, with the plan's defines written at the top
    (the same as -D flags: every tunable is #ifndef-guarded), so one nvcc call takes many files."""
    defines = tpl.plan(config, shape, dtype).defines
    head = "".join(f"#define {k} {int(v) if isinstance(v, bool) else v}\n" for k, v in sorted(defines.items()))
    return head + tpl.render("cuda")


def nvcc_ptx(files: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NVCC, "-ptx", f"-arch={ARCH}", *[f.name for f in files]], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compile every case of every registered template; return {label: (case, ptx text or error)}
    where case is (template name, shape, dtype, config)."""
    work = tmp_path_factory.mktemp("cuda_ptx")
    todo = all_cases()
    files = []
    for label, name, shape, dtype, config in todo:
        f = work / f"{label}.cu"
        f.write_text(cuda_source(templates.get(name), shape, dtype, config))
        files.append(f)
    batches = [files[i::BATCHES] for i in range(BATCHES)]
    with ThreadPoolExecutor(BATCHES) as pool:
        results = list(pool.map(lambda b: nvcc_ptx(b, work), batches))
    failed_batches = [b for b, r in zip(batches, results) if r.returncode != 0]
    out = {}
    for (label, *case), f in zip(todo, files):
        ptx = f.with_suffix(".ptx")
        if any(f in b for b in failed_batches) and not ptx.exists():
            # nvcc stops at the first broken file of a batch: compile the rest one by one to name each.
            r = nvcc_ptx([f], work)
            out[label] = (tuple(case), ptx.read_text() if r.returncode == 0 else r.stderr.strip()[-2000:])
        else:
            out[label] = (tuple(case), ptx.read_text())
    return out


def test_every_template_and_sampled_config_compiles_to_ptx(compiled):
    broken = [f"{label} {dict(case[3])}: {text}" for label, (case, text) in compiled.items() if ".entry" not in text]
    assert not broken, "CUDA dialect build failures:\n" + "\n\n".join(broken)


def test_sample_covers_every_template_and_each_parameter_value(compiled):
    """Each template is compiled; each source file with every value of every parameter."""
    by_source: dict = {}
    for name in templates.names():
        tpl = templates.get(name)
        cfgs = [case[3] for case, _ in compiled.values() if case[0] == name]
        assert cfgs, f"no config of {name} was compiled"
        ctx = Context(tpl.default_shape, tpl.dtypes[0], None)
        possible = {(k, v) for c in tpl.all_configs() if tpl.is_valid(c, ctx) for k, v in c.items()}
        want, taken = by_source.setdefault(tpl.source_path(), (possible, set()))
        taken |= {(k, v) for c in cfgs for k, v in c.items()}
    for source, (want, taken) in by_source.items():
        assert want <= taken, f"{source.name}: values never compiled: {sorted(want - taken)}"


def test_every_kernel_of_a_template_is_an_unmangled_entry(compiled):
    """KERNEL is extern "C": the backend finds kernels by their plain names."""
    for label, (case, text) in compiled.items():
        tpl = templates.get(case[0])
        for kernel in tpl.kernel_names:
            assert f".entry {kernel}(" in text, f"{label}: no entry point {kernel!r}"


def test_aligned_vector_loads_and_stores_become_wide_instructions(compiled, tmp_path):
    """VW=4 float32 matmul must use 16-byte loads of B and stores of C, not only element loops
    (a valid such config is compiled here where the covering sample holds none)."""
    hits = [text for case, text in compiled.values()
            if case[0] == "matmul" and case[2] == "float32" and case[3]["VW"] == 4 and case[3]["LOCAL"] == 0]
    if not hits:
        tpl = templates.get("matmul")
        ctx = Context(tpl.default_shape, "float32", None)
        config = next(c for c in tpl.all_configs() if c["VW"] == 4 and c["LOCAL"] == 0 and tpl.is_valid(c, ctx))
        f = tmp_path / "vw4.cu"
        f.write_text(cuda_source(tpl, tpl.default_shape, "float32", config))
        r = nvcc_ptx([f], tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        hits = [f.with_suffix(".ptx").read_text()]
    for text in hits:
        assert "ld.global.nc.v4.f32" in text and "st.global.v4.f32" in text


def test_a_broken_source_is_reported_not_ignored(tmp_path):
    """The harness itself fails on a dialect error (guards against a test that cannot fail)."""
    f = tmp_path / "broken.cu"
    f.write_text(templates.base.prelude("cuda") + "KERNEL void k(GLOBAL real* x) { x[LID(0)] = undefined_name; }\n")
    r = nvcc_ptx([f], tmp_path)
    assert r.returncode != 0 and "undefined_name" in r.stderr
