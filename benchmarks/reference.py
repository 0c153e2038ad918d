"""numpy references for the benchmarks, each measured in a child process, twice.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, where an environment sets them (this development
machine sets OPENBLAS_CORETYPE=Haswell), pin numpy's OpenBLAS to one kernel whatever the CPU:
AVX2 code on a CPU with AVX-512, numpy slower than it is for anyone else. OpenBLAS reads them
once, when it loads, so the only honest way to measure without them is a fresh process:

* ``native``: the child runs with both variables unset (OpenBLAS picks its kernel itself);
* ``pinned``: the child runs with the environment as it is.

Each child times at least ``reps`` runs and half a second (after a warm-up) and reports the
OpenBLAS kernel that ran (threadpoolctl's ``architecture``); the children of a mode take turns
with the other mode's, and a reference is the median and the best rate over all their runs. Benchmarks divide by the
native median. The parent's own environment is never changed. A child that dies (OpenBLAS
has crashed in its own kernels on some CPUs) is a reference with an error, not a dead benchmark.

    .venv/bin/python benchmarks/reference.py matmul 1024     # both figures for one workload
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

PINNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
MODES = ("native", "pinned")
REPS = 15  # timed runs per child, at least
MIN_SECONDS, MAX_REPS = 0.5, 2000  # and at least this long, where runs are short
ROUNDS = 2  # children per mode, taking turns


@dataclass(frozen=True)
class Reference:
    """One workload measured by numpy in one child process."""

    mode: str  # "native" (pinning variables unset) or "pinned" (environment as is)
    median: float = float("nan")  # rate: GFLOP/s for matmul and attention, GB/s read for reductions
    best: float = float("nan")
    unit: str = ""
    reps: int = 0
    kernel: str = "?"  # the OpenBLAS core type that ran ('Haswell', 'SkylakeX', 'Zen', ...)
    threads: int = 0
    pinning: dict = field(default_factory=dict)  # the variables as the child saw them (None: unset)
    error: str = ""  # why the child gave no figures

    @property
    def ok(self) -> bool:
        return not self.error


def child_env(mode: str, base: dict | None = None) -> dict:
    """The environment of a child: ``base`` (default: this process's) as is, or without the
    pinning variables for ``native``."""
    env = dict(os.environ if base is None else base)
    if mode == "native":
        for name in PINNING:
            env.pop(name, None)
    elif mode != "pinned":
        raise ValueError(f"mode is one of {MODES}, not {mode!r}")
    return env


def measure(workload: dict, mode: str, reps: int = REPS, base_env: dict | None = None, min_seconds: float = MIN_SECONDS,
            timeout: float = 900) -> Reference:
    """``workload`` (see ``_workload``) timed by numpy in one child process run in ``mode``
    (``base_env``: the environment to start from, this process's by default)."""
    return _reference(mode, [_run_child(workload, mode, reps, base_env, min_seconds, timeout)])


def measure_both(workload: dict, reps: int = REPS, base_env: dict | None = None, rounds: int = ROUNDS,
                 min_seconds: float = MIN_SECONDS) -> dict[str, Reference]:
    """{"native": ..., "pinned": ...}: ``rounds`` children per mode, taking turns, their runs
    pooled, so a burst of load from elsewhere on a shared machine falls on both modes alike."""
    runs: dict[str, list] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            runs[mode].append(_run_child(workload, mode, reps, base_env, min_seconds))
    return {mode: _reference(mode, runs[mode]) for mode in MODES}


def _run_child(workload: dict, mode: str, reps: int, base_env: dict | None, min_seconds: float, timeout: float = 900) -> dict:
    spec = json.dumps({**workload, "reps": reps, "min_seconds": min_seconds})
    try:
        done = subprocess.run([sys.executable, __file__, "--child", spec], env=child_env(mode, base_env),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {timeout:.0f} s"}
    if done.returncode != 0:
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        tail = (done.stderr.strip().splitlines() or [""])[-1]
        return {"error": f"child died ({how}) {tail}".strip()}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reference(mode: str, runs: list[dict]) -> Reference:
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return Reference(mode, error=errors[0])
    first, rates = runs[0], [runs[0]["work"] / t for r in runs for t in r["times"]]
    return Reference(mode, statistics.median(rates), max(rates), first["unit"], len(rates), first["kernel"], first["threads"],
                     first["pinning"])


def ratio(achieved: float, refs: dict[str, Reference]) -> float:
    """achieved / the native median (the pinned one where the native child failed)."""
    for mode in MODES:
        if refs[mode].ok and refs[mode].median > 0:
            return achieved / refs[mode].median
    return float("nan")


def cell(ref: Reference) -> str:
    """'143.2/151.0' (median/best), or 'failed'."""
    return f"{ref.median:.1f}/{ref.best:.1f}" if ref.ok else "failed"


def summary(all_refs: list[dict[str, Reference]]) -> list[str]:
    """Lines saying what each mode ran: kernel, threads, the variables the child saw, failures."""
    lines = []
    for mode in MODES:
        refs = [r[mode] for r in all_refs]
        good = [r for r in refs if r.ok]
        kernels = sorted({f"{r.kernel} ({r.threads} threads)" for r in good}) or ["-"]
        seen = good[0].pinning if good else {}
        env = " ".join(f"{k}={v if v is not None else 'unset'}" for k, v in seen.items()) or "?"
        errors = sorted({r.error for r in refs if not r.ok})
        lines.append(f"numpy {mode}: OpenBLAS kernel {', '.join(kernels)}; child saw {env}; median/best over at least {min((r.reps for r in good), default=0)} runs"
                     + (f"; FAILED: {'; '.join(errors)}" if errors else ""))
    lines.append("tuned/numpy ratios are against the native median")
    return lines


# ---- the child ----------------------------------------------------------------------------------
def numpy_attention(q, k, v, scale, causal):
    """Attention in float32 numpy, unfused (scores, softmax, product on its BLAS), one head at a time."""
    import numpy as np

    out = np.empty_like(q)
    nq, nkv = q.shape[2], k.shape[2]
    mask = np.arange(nkv)[None, :] > np.arange(nq)[:, None] + nkv - nq
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            s = q[b, h] @ k[b, h].T * np.float32(scale)
            if causal:
                s[mask] = -np.inf
            s -= s.max(axis=1, keepdims=True)
            p = np.exp(s)
            out[b, h] = (p @ v[b, h]) / p.sum(axis=1, keepdims=True)
    return out


REDUCTIONS = {
    "reduce_sum": lambda x: x.sum(axis=1),
    "reduce_max": lambda x: x.max(axis=1),
    "reduce_mean": lambda x: x.mean(axis=1),
    "reduce_sumsq": lambda x: __import__("numpy").einsum("ij,ij->i", x, x),
}


def _workload(spec: dict):
    """(function to time, work per call, unit) of a workload:
    {"kind": "matmul", "n": N} float32 NxN @ NxN, GFLOP/s;
    {"kind": "reduce", "template": name, "shape": [R, C]} rows of float32, GB/s read;
    {"kind": "attention", "template": name, "shape": [B, H, Q, KV, D]} the template's inputs, GFLOP/s."""
    import numpy as np

    rng = np.random.default_rng(0)
    if spec["kind"] == "matmul":
        n = spec["n"]
        a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
        return (lambda: a @ b), 2.0 * n**3 * 1e-9, "GFLOP/s"
    if spec["kind"] == "reduce":
        x = rng.random(tuple(spec["shape"]), dtype=np.float32)
        fn = REDUCTIONS[spec["template"]]
        return (lambda: fn(x)), x.nbytes * 1e-9, "GB/s"
    if spec["kind"] == "attention":
        from tunesvc.templates import get

        tpl, shape = get(spec["template"]), tuple(spec["shape"])
        inputs = tpl.make_inputs(shape, "float32", rng)
        args = (inputs["Q"], inputs["K"], inputs["V"], float(inputs["scale"][0]), tpl.causal)
        return (lambda: numpy_attention(*args)), tpl.flops(shape) * 1e-9, "GFLOP/s"
    raise ValueError(f"unknown workload kind {spec['kind']!r}")


def _blas() -> tuple[str, int]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl)", 0
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            return str(lib.get("architecture") or lib.get("internal_api")), int(lib.get("num_threads") or 0)
    return "no BLAS loaded", 0


def _child(spec: dict) -> dict:
    fn, work, unit = _workload(spec)
    fn()  # warm-up: page faults, BLAS threads started, buffers allocated
    times, start = [], time.perf_counter()
    # at least reps runs and min_seconds, so a workload of a millisecond is timed often enough
    while len(times) < spec["reps"] or (time.perf_counter() - start < spec["min_seconds"] and len(times) < MAX_REPS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    kernel, threads = _blas()
    return {"times": times, "work": work, "unit": unit, "kernel": kernel, "threads": threads,
            "pinning": {name: os.environ.get(name) for name in PINNING}}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(_child(json.loads(argv[1]))))
        return
    kind, arg = argv[0], argv[1]
    workload = {"kind": "matmul", "n": int(arg)} if kind == "matmul" else {"kind": kind, "template": arg, "shape": [int(s) for s in argv[2].split("x")]}
    refs = measure_both(workload)
    for mode, r in refs.items():
        print(f"{mode:>6}: {cell(r)} {r.unit} (median/best)")
    print("\n".join(summary([refs])))


if __name__ == "__main__":
    main(sys.argv[1:])
