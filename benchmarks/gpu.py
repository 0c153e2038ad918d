"""Tuned tunesvc kernels against the vendor's own on an NVIDIA GPU, side by side in one run.

    python benchmarks/gpu.py [--quick] [--trials N] [--time-budget S] [--db FILE] [--export DIR]

Each problem is tuned on cuda:0 (and on NVIDIA's OpenCL driver where the machine
has one: the same template sources, tuned separately), its best config is
re-timed, and the reference is measured in the same process with CUDA events:

* SGEMM (matmul float32) against torch.matmul float32 with TF32 off (cuBLAS);
* reductions and decode attention (memory-bound) against the device-to-device
  copy bandwidth measured here (bytes read + written per second);
* prefill attention against torch.nn.functional.scaled_dot_product_attention
  in float32.

Needs torch and a CUDA binding: cuda-python (tunesvc[cuda], binary wheels; the GPU image has it) or pycuda (tools/gpu_wheels.sh builds it where there is no network)
and an NVIDIA GPU. Prints one table; ``--export`` writes the best configs of
this GPU as tunesvc export files for tuning_db/.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunesvc import templates  # noqa: E402
from tunesvc.devices import discover, open_device  # noqa: E402
from tunesvc.measure.evaluator import Evaluator, Method  # noqa: E402
from tunesvc.tuning.tuner import tune  # noqa: E402

GOALS = {"cublas": 0.70, "bandwidth": 0.80, "sdpa": None}


@dataclass(frozen=True)
class Problem:
    label: str
    template: str
    shape: tuple
    reference: str  # "cublas", "bandwidth" or "sdpa"


FULL = (
    Problem("sgemm 4096^3", "matmul", (4096, 4096, 4096), "cublas"),
    Problem("sgemm 2048^3", "matmul", (2048, 2048, 2048), "cublas"),
    Problem("reduce_sum 16384x16384", "reduce_sum", (16384, 16384), "bandwidth"),
    Problem("reduce_max 65536x4096", "reduce_max", (65536, 4096), "bandwidth"),
    Problem("reduce_sum 16x4194304", "reduce_sum", (16, 4194304), "bandwidth"),
    Problem("decode attn 1x32x1x16384x128", "attention", (1, 32, 1, 16384, 128), "bandwidth"),
    Problem("decode attn 16x8x1x4096x128", "attention", (16, 8, 1, 4096, 128), "bandwidth"),
    Problem("prefill attn 1x16x1024x1024x64", "attention", (1, 16, 1024, 1024, 64), "sdpa"),
    Problem("prefill causal 1x16x1024x1024x64", "attention_causal", (1, 16, 1024, 1024, 64), "sdpa"),
)
QUICK = (
    Problem("sgemm 1024^3", "matmul", (1024, 1024, 1024), "cublas"),
    Problem("reduce_sum 4096x4096", "reduce_sum", (4096, 4096), "bandwidth"),
    Problem("decode attn 1x8x1x4096x128", "attention", (1, 8, 1, 4096, 128), "bandwidth"),
    Problem("prefill attn 1x8x256x256x64", "attention", (1, 8, 256, 256, 64), "sdpa"),
)


# ---- references, measured with CUDA events through torch ----------------------------------
def time_torch(torch, fn, reps: int = 30, warmup: int = 3) -> float:
    """Median seconds of ``fn`` over ``reps`` event-timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def copy_bandwidth(torch, nbytes: int = 1 << 30) -> float:
    """Bytes read plus written per second by a device-to-device copy far larger than L2."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    y = torch.empty_like(x)
    return 2 * nbytes / time_torch(torch, lambda: y.copy_(x))


def cublas_seconds(torch, shape) -> float:
    m, n, k = shape
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    a = torch.randn(m, k, device="cuda")
    b = torch.randn(k, n, device="cuda")
    return time_torch(torch, lambda: torch.matmul(a, b))


def sdpa_seconds(torch, shape, causal: bool) -> float:
    b, h, q, kv, d = shape
    if causal and q != kv:
        raise ValueError("torch's causal mask is aligned to the top left; compare causal prefill at Q == KV only")
    qt = torch.randn(b, h, q, d, device="cuda")
    kt = torch.randn(b, h, kv, d, device="cuda")
    vt = torch.randn(b, h, kv, d, device="cuda")
    f = torch.nn.functional.scaled_dot_product_attention
    return time_torch(torch, lambda: f(qt, kt, vt, is_causal=causal, scale=1 / math.sqrt(d)))


# ---- tunesvc side -------------------------------------------------------------------------
def tuned(problem: Problem, info, db: str, trials: int, budget: float):
    """Tune, then re-time the best config with more runs; (seconds, config, trials measured) or None."""
    tpl = templates.get(problem.template)
    result = tune(tpl, problem.shape, "float32", info, db=db, trials=trials, time_budget=budget, seed=0)
    if result.best is None:
        return None, result
    method = Method(warmup=3, runs=20, max_runs=60, max_seconds=5.0, confirm=0)
    m = Evaluator(open_device(info), tpl, problem.shape, "float32", method).evaluate(result.best.config)
    return (m.time if m.ok else result.best.time), result


def row(problem: Problem, backend: str, seconds, result, ref_name: str, ref_value: float) -> dict:
    tpl = templates.get(problem.template)
    if seconds is None:
        return {"problem": problem.label, "backend": backend, "tuned": "no valid config", "reference": ref_name}
    gflops = tpl.flops(problem.shape) / seconds * 1e-9
    gbps = tpl.bytes_moved(problem.shape, "float32") / seconds * 1e-9
    if problem.reference == "bandwidth":
        ratio, tuned_txt, ref_txt = gbps / (ref_value * 1e-9), f"{gbps:,.0f} GB/s", f"{ref_value * 1e-9:,.0f} GB/s"
    else:
        ratio = ref_value / seconds  # reference time / tuned time: above 1 is faster than the reference
        ref_gflops = tpl.flops(problem.shape) / ref_value * 1e-9
        tuned_txt, ref_txt = f"{gflops:,.0f} GFLOP/s", f"{ref_gflops:,.0f} GFLOP/s"
    goal = GOALS[problem.reference]
    return {"problem": problem.label, "backend": backend, "time": f"{seconds * 1e3:.3f} ms", "tuned": tuned_txt,
            "reference": f"{ref_name} {ref_txt}", "ratio": f"{ratio:.2f}",
            "goal": f">= {goal:.2f} {'met' if ratio >= goal else 'MISSED'}" if goal else "-",
            "trials": str(len(result.measured)), "best config": " ".join(f"{k}={v}" for k, v in result.best.config.items())}


def table(rows: list[dict]) -> str:
    cols = ["problem", "backend", "time", "tuned", "reference", "ratio", "goal", "trials", "best config"]
    w = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    line = lambda vals: "  ".join(v.ljust(w[c]) for c, v in zip(cols, vals)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w[c] for c in cols])] + [line([r.get(c, "") for c in cols]) for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes and few trials: a smoke run")
    ap.add_argument("--trials", type=int, default=None, help="new configs per problem and backend (default 60, quick 12)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds per problem and backend (default 90, quick 20)")
    ap.add_argument("--db", default=None, help="tuning database (default: a fresh temporary file)")
    ap.add_argument("--export", default=None, help="folder to write this GPU's best configs to (tunesvc export --best-only)")
    args = ap.parse_args(argv)
    trials = args.trials or (12 if args.quick else 60)
    budget = args.time_budget or (20.0 if args.quick else 90.0)
    db = args.db or str(Path(tempfile.mkdtemp(prefix="tunesvc-gpu-")) / "gpu.db")

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch; this benchmark needs an NVIDIA GPU", file=sys.stderr)
        return 1
    found = discover()
    cuda_devs = [d for d in found.devices if d.fingerprint.backend == "cuda"]
    if not cuda_devs:
        print(f"tunesvc sees no CUDA device: {found.unavailable.get('cuda', '?')}", file=sys.stderr)
        return 1
    nv_cl = [d for d in found.devices if d.fingerprint.backend == "opencl" and d.vendor == "NVIDIA"]
    backends = [("cuda", cuda_devs[0])] + [("opencl", d) for d in nv_cl[:1]]
    print(f"device: {cuda_devs[0].name} ({cuda_devs[0].fingerprint.architecture}, {cuda_devs[0].compute_units} SMs); "
          f"driver {cuda_devs[0].fingerprint.driver}; torch {torch.__version__}")
    if not nv_cl:
        print(f"NVIDIA OpenCL: not present ({found.unavailable.get('opencl') or 'no NVIDIA platform among ' + str([d.platform for d in found.devices if d.fingerprint.backend == 'opencl'])})")
    bw = copy_bandwidth(torch)
    print(f"measured copy bandwidth: {bw * 1e-9:,.0f} GB/s (read + write, 1 GiB device-to-device)")
    print(f"trials per problem and backend: {trials}, time budget {budget:.0f} s; database {db}\n", flush=True)

    rows = []
    for p in (QUICK if args.quick else FULL):
        if p.reference == "cublas":
            ref_name, ref = "cuBLAS fp32", cublas_seconds(torch, p.shape)
        elif p.reference == "sdpa":
            ref_name, ref = "torch SDPA fp32", sdpa_seconds(torch, p.shape, templates.get(p.template).causal)
        else:
            ref_name, ref = "copy", bw
        for backend, info in backends:
            seconds, result = tuned(p, info, db, trials, budget)
            rows.append(row(p, backend, seconds, result, ref_name, ref))
            print(f"  {p.label} on {backend}: done", file=sys.stderr, flush=True)
    print(table(rows))
    if args.export:
        from tunesvc.cache.exchange import export

        out = Path(args.export)
        out.mkdir(parents=True, exist_ok=True)
        for _, info in backends:
            path = out / f"{info.fingerprint.backend}-{'_'.join(info.name.split())}.jsonl"
            s = export(str(path), db, info.fingerprint.key, None, True)
            print(f"exported {s.records} best configs to {s.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
