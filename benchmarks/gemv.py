"""Quantized GEMV (gemv_q) against the device's measured bandwidth and float32 numpy on the same
matrix, and the decode rate of an 8B model computed from the measured kernel times.

    cd benchmarks && ../.venv/bin/python gemv.py [--trials 10] [--db bench.db] [--device ID] [--quick] [--shipped]

The cases are Llama-3.1-8B's decode projections (N x K = outputs x inputs) at batch 1 in int4 in
groups of 32 with float16 scales (llama.cpp's Q4_0 values), one in int8 (Q8_0) and one in int4 in
groups of 128 with zero points (GPTQ, AWQ). Bandwidth is counted on the bytes a product reads
(codes, scales, zero points, x): the fractions are of the read and copy ceilings probed before and
after the cases (the higher of each). numpy's x @ W.T on the float32 matrix runs in child
processes, native and with the pinned OpenBLAS environment (see reference.py), and natively with W
from memory (copies of W taken in turn over the tuner's 64 MiB, as gemv_q is timed; `numpy mem`);
speedups are per call, against the native medians. The tokens-per-second table adds the kernel times of one decode
step: 32 layers of projections and grouped-query attention over a 4096-token cache, then the
vocabulary head.

``--shipped`` also takes, for every case, the config the lookup answers from the shipped results
(``tuning_db/``, tuned earlier on a machine like this one with more trials) for a user with no
tuning of their own, verifies it against the float64 reference, and times it again in this run,
interleaved round by round with the config tuned here: a second table and a second tokens-per-
second figure, from those re-timed kernels. A case with no shipped result for this device and
shape says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import reference  # benchmarks/ is the script's folder
from reduce import ceilings, ceilings_header, failed_row, reprobe
from tunesvc import templates
from tunesvc.devices import open_device
from tunesvc.lookup import lookup
from tunesvc.measure.evaluator import Evaluator, Method
from tunesvc.tuning.tuner import tune

SCALES = "float16"
Q4, Q8, AWQ = ("gemv_q", 4, 32), ("gemv_q", 8, 32), ("gemv_q_zp", 4, 128)
# (label, format, N, K): the 8B model's matrices (q and o share a shape, so do k and v, gate and up)
CASES = [("q, o", Q4, 4096, 4096), ("k, v", Q4, 1024, 4096), ("gate, up", Q4, 14336, 4096), ("down", Q4, 4096, 14336),
         ("vocab head", Q4, 128256, 4096), ("gate, up", Q8, 14336, 4096), ("gate, up", AWQ, 14336, 4096)]
ATTENTION = ("attention", (1, 32, 8, 1, 4096, 128))  # 32 query heads over 8 KV heads of 128, a 4096-token cache
LAYERS = 32
NUMPY_MAX_BYTES = 1 << 30  # float32 matrices beyond this (the vocabulary head, 2.1 GB) get no numpy reference
ROTATE_BYTES = Method().rotate_bytes  # numpy's "from memory" copies span what the tuner's do


def shape_of(fmt, n: int, k: int) -> tuple:
    return (1, n, k, fmt[1], fmt[2])


def read_gbps(name: str, shape, seconds: float) -> float:
    """GB/s on what a product reads: the template's bytes less the B x N floats of y it writes."""
    return (templates.get(name).bytes_moved(shape, SCALES) - 4 * shape[0] * shape[1]) / seconds * 1e-9


def numpy_refs(n: int, k: int) -> dict | None:
    """float32 x @ W.T on an N x K matrix, timed in child processes (both OpenBLAS modes), and
    natively once more with W from memory ("memory"): the child rotates through copies of W
    spanning ROTATE_BYTES, the rule the tuner times gemv_q by (Method.rotate_bytes), as in a
    decode step, where each layer's weights were last read a whole model ago. A matrix of that
    size or more is one copy, so the two native figures differ only where W fits in the caches."""
    if 4 * n * k > NUMPY_MAX_BYTES:
        return None
    runs = {mode: [] for mode in (*reference.MODES, "memory")}
    for _ in range(reference.ROUNDS):
        for mode in reference.MODES:  # taking turns, so a burst of load falls on all of them alike
            runs[mode].append(_run_child({"n": n, "k": k}, mode))
        runs["memory"].append(_run_child({"n": n, "k": k, "rotate": ROTATE_BYTES}, "native"))
    return {mode: _pooled(mode, r) for mode, r in runs.items()}


def _run_child(spec: dict, mode: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=reference.child_env(mode),
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"error": f"child died (exit {done.returncode}) {(done.stderr.strip().splitlines() or [''])[-1]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pooled(mode: str, runs: list[dict]) -> reference.Reference:
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return reference.Reference(mode, error=errors[0])
    rates = [r["work"] / t for r in runs for t in r["times"]]  # calls per second
    return reference.Reference(mode, statistics.median(rates), max(rates), "calls/s", len(rates), runs[0]["kernel"],
                               runs[0]["threads"], runs[0]["pinning"])


def _child(spec: dict) -> dict:
    """Time x @ W.T in this process: at least REPS calls and MIN_SECONDS after a warm-up."""
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.random((spec["n"], spec["k"]), dtype=np.float32)
    ws = [w] + [w.copy() for _ in range(1, -(-spec.get("rotate", 0) // w.nbytes))]  # W from memory: copies in turn
    x = rng.random((1, spec["k"]), dtype=np.float32)
    for w in ws:
        x @ w.T
    times, start = [], time.perf_counter()
    while len(times) < reference.REPS or (time.perf_counter() - start < reference.MIN_SECONDS and len(times) < reference.MAX_REPS):
        w = ws[len(times) % len(ws)]
        t0 = time.perf_counter()
        x @ w.T
        times.append(time.perf_counter() - t0)
    kernel, threads = reference._blas()
    return {"times": times, "work": 1.0, "kernel": kernel, "threads": threads,
            "pinning": {name: os.environ.get(name) for name in reference.PINNING}}


def numpy_ms(refs, mode: str) -> float:
    """numpy's median milliseconds per call in ``mode``; nan where it was not run or failed."""
    return 1e3 / refs[mode].median if refs and refs[mode].ok else float("nan")


def config(r) -> str:
    return cfg_text(r.best.config)


def cfg_text(c) -> str:
    return " ".join(f"{k}={v}" for k, v in c.items())


ROUNDS = 31  # interleaved rounds of the shipped and the tuned config, at most (about 10 s of them)


def retime(device, name: str, shape, dtype: str, tuned, nowhere: str) -> dict:
    """The lookup's shipped config for this device and shape (``nowhere``: a database path that
    does not exist, so the answer cannot come from this run's tuning), verified, and timed again
    interleaved with the config tuned in this run: {"shipped": Measurement | None, "tuned":
    Measurement | None, "config": the shipped config | None, "why": a reason when there is none}."""
    res = lookup(name, shape, dtype, device=device.info, db=nowhere)
    if res.level != "shipped" or tuple(res.tuned_shape or ()) != tuple(shape):
        why = ("the shipped results for this device are at other shapes" if res.level == "shipped"
               else f"no shipped result for this device (the lookup answers {res.level})")
        return {"shipped": None, "tuned": None, "config": None, "why": why}
    ev = Evaluator(device, templates.get(name), shape, dtype, Method())  # the tuner's method: buffer sets rotated
    first = ev.evaluate(res.config)  # verified against the float64 reference before it is timed
    if not first.ok:
        return {"shipped": None, "tuned": None, "config": res.config, "why": f"shipped config {first.status}: {first.reason}"}
    configs = [res.config] + ([tuned.config] if tuned is not None and tuned.ok and tuned.config != res.config else [])
    got = {m.config: m for m in ev.compare(configs, rounds=ROUNDS)}
    s = got.get(res.config)
    t = got.get(tuned.config) if tuned is not None and tuned.ok else None
    return {"shipped": s if s is not None and s.ok else None, "tuned": t if t is not None and t.ok else None,
            "config": res.config, "why": "" if s is not None and s.ok else f"shipped config failed when re-timed: {s.reason if s else '?'}"}


def run_cases(args, device) -> list:
    out = []
    for label, fmt, n, k in CASES if not args.quick else [(lb, f, n // 16, k // 16) for lb, f, n, k in CASES]:
        name, shape = fmt[0], shape_of(fmt, n, k)
        print(f"tuning {name} {'x'.join(map(str, shape))} ({label}) ...", flush=True)
        r = tune(name, shape, SCALES, device.info, db=args.db, trials=args.trials, seed=0)
        out.append((label, fmt, n, k, r, numpy_refs(n, k)))
    return out


def print_cases(results, c) -> None:
    print(f"{'matrix':<11} {'template':<10} {'BxNxKxBITSxG':<22} {'default GB/s':>12} {'tuned GB/s':>10} {'tuned/read':>10} "
          f"{'tuned/copy':>10} {'tuned ms':>9} {'numpy native ms':>15} {'numpy/tuned':>11} {'numpy mem ms':>12} {'mem/tuned':>9}  best config")
    for label, fmt, n, k, r, refs in results:
        name, shape = fmt[0], shape_of(fmt, n, k)
        if (line := failed_row(name, shape, r)) is not None:
            print(line)
            continue
        t, d = r.best.timing.median, (r.default.timing.median if r.default and r.default.ok else float("nan"))
        g = read_gbps(name, shape, t)
        np_ms, mem_ms = numpy_ms(refs, "native"), numpy_ms(refs, "memory")
        print(f"{label:<11} {name:<10} {'x'.join(map(str, shape)):<22} {read_gbps(name, shape, d):>12.2f} {g:>10.2f} "
              f"{g / c.of('read_bandwidth'):>10.0%} {g / c.gbps:>10.0%} {t * 1e3:>9.3f} {np_ms:>15.3f} {np_ms / (t * 1e3):>11.2f} "
              f"{mem_ms:>12.3f} {mem_ms / (t * 1e3):>9.2f}  {config(r)}")
    refs = [x[5] for x in results if x[5]]
    if refs:
        print("\n".join(reference.summary(refs)).replace("tuned/numpy ratios", "numpy/tuned speedups"))
        print(f"numpy mem: native, W from memory: the child takes turns over copies of W spanning {ROTATE_BYTES >> 20} MiB, "
              "as the tuner times gemv_q (one copy where W is that large); mem/tuned is against its median")


def print_shipped(results, shipped, c) -> None:
    """The shipped configs re-timed in this run, beside the tuned ones re-timed in the same rounds."""
    print(f"\nshipped configs (tuning_db/, the lookup's answer on this device), verified and re-timed here, up to {ROUNDS} rounds "
          "interleaved with this run's tuned config (medians)")
    print(f"{'matrix':<11} {'template':<10} {'BxNxKxBITSxG':<22} {'tuned GB/s':>10} {'shipped GB/s':>12} {'shipped/read':>12} "
          f"{'shipped/copy':>12} {'shipped ms':>10} {'numpy/shipped':>13} {'mem/shipped':>11}  shipped config")
    for (label, fmt, n, k, r, refs), got in zip(results, shipped):
        name, shape = fmt[0], shape_of(fmt, n, k)
        sh = "x".join(map(str, shape))
        if got["shipped"] is None:
            print(f"{label:<11} {name:<10} {sh:<22} {got['why']}")
            continue
        s, t = got["shipped"], got["tuned"] or got["shipped"]  # the same config: one measurement
        g, gt = read_gbps(name, shape, s.time), read_gbps(name, shape, t.time)
        np_ms, mem_ms = numpy_ms(refs, "native"), numpy_ms(refs, "memory")
        print(f"{label:<11} {name:<10} {sh:<22} {gt:>10.2f} {g:>12.2f} {g / c.of('read_bandwidth'):>12.0%} {g / c.gbps:>12.0%} "
              f"{s.time * 1e3:>10.3f} {np_ms / (s.time * 1e3):>13.2f} {mem_ms / (s.time * 1e3):>11.2f}  {cfg_text(got['config'])}")


def print_tokens(results, attn, c, times: dict | None = None, attn_time: float | None = None) -> None:
    """The arithmetic of one int4 decode step of the 8B model from the measured kernel times (or
    from ``times``, label -> seconds, and ``attn_time``: the re-timed ones)."""
    if times is None:
        t = {label: r.best.timing.median * 1e3 for label, fmt, n, k, r, _ in results if fmt == Q4 and r.best and r.best.ok}
    else:
        t = {label: v * 1e3 for label, v in times.items()}
    if len(t) < 5 or not (attn.best and attn.best.ok):
        print("tokens per second: some kernel measured no ok config; not computed")
        return
    ta = (attn_time if attn_time is not None else attn.best.timing.median) * 1e3
    layer = 2 * t["q, o"] + 2 * t["k, v"] + 2 * t["gate, up"] + t["down"] + ta
    step = LAYERS * layer + t["vocab head"]
    print(f"8B decode, int4 weights in groups of 32 with float16 scales, a {ATTENTION[1][4]}-token cache, from the kernel times above:")
    attn_bytes = templates.get(ATTENTION[0]).bytes_moved(ATTENTION[1], attn.dtype)
    print(f"  per layer: 2 x q,o {t['q, o']:.3f} + 2 x k,v {t['k, v']:.3f} + 2 x gate,up {t['gate, up']:.3f} + down {t['down']:.3f} "
          f"+ attention {ta:.3f} ({attn_bytes / ta * 1e-6:.2f} GB/s) = {layer:.3f} ms")
    print(f"  per token: {LAYERS} x {layer:.3f} + vocab head {t['vocab head']:.3f} = {step:.2f} ms -> {1e3 / step:.2f} tokens/s")
    per_layer = {"q, o": 2, "k, v": 2, "gate, up": 2, "down": 1}  # matrices of each shape in a layer
    nbytes = {lb: templates.get(f[0]).bytes_moved(shape_of(f, n, k), SCALES) for lb, f, n, k, *_ in results if f == Q4}
    total = LAYERS * (sum(m * nbytes[lb] for lb, m in per_layer.items())
                      + templates.get(ATTENTION[0]).bytes_moved(ATTENTION[1], attn.dtype)) + nbytes["vocab head"]
    print(f"  bytes per token {total / 2**20:.0f} MiB; at the copy ceiling {c.gbps:.2f} GB/s: {c.gbps * 1e9 / total:.2f} tokens/s "
          "(not counted: norms, rotary embeddings, residual adds, sampling: O(hidden) work per layer)")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(_child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--db", default=None)
    ap.add_argument("--device", default=None, help="device id, fingerprint key or name (default: the default device)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: every matrix 16x smaller each way (figures mean nothing)")
    ap.add_argument("--shipped", action="store_true", help="also re-time the shipped configs (tuning_db/) against the tuned ones")
    args = ap.parse_args()
    args.db = args.db or tempfile.mkdtemp() + "/bench.db"
    device = open_device(args.device)
    before = ceilings(args.db, device)
    results = run_cases(args, device)
    dtype = "float16" if device.info.fp16 else "float32"  # the KV cache: half where the device has it
    print(f"tuning {ATTENTION[0]} {'x'.join(map(str, ATTENTION[1]))} {dtype} ...", flush=True)
    attn = tune(ATTENTION[0], ATTENTION[1], dtype, device.info, db=args.db, trials=args.trials, seed=0)
    shipped, attn_shipped = [], None
    if args.shipped:
        nowhere = tempfile.mkdtemp() + "/none.db"  # no such file: the lookup answers from the shipped results
        for label, fmt, n, k, r, _ in results:
            print(f"re-timing the shipped config of {fmt[0]} {'x'.join(map(str, shape_of(fmt, n, k)))} ...", flush=True)
            shipped.append(retime(device, fmt[0], shape_of(fmt, n, k), SCALES, r.best, nowhere))
        attn_shipped = retime(device, ATTENTION[0], ATTENTION[1], dtype, attn.best, nowhere)
    c = reprobe(device, before)
    print(ceilings_header(device, c, args.trials) + f"; scales {SCALES}")
    print_cases(results, c)
    print_tokens(results, attn, c)
    if args.shipped:
        print_shipped(results, shipped, c)
        a = attn_shipped
        if a["shipped"] is not None:
            print(f"attention {'x'.join(map(str, ATTENTION[1]))} {dtype}: tuned {(a['tuned'] or a['shipped']).time * 1e3:.3f} ms, "
                  f"shipped {a['shipped'].time * 1e3:.3f} ms ({cfg_text(a['config'])})")
        else:
            print(f"attention {'x'.join(map(str, ATTENTION[1]))} {dtype}: {a['why']}")
        # each kernel at the faster of its two re-timed configs: what a user gets with both at hand
        best = {}
        for (label, fmt, *_), got in zip(results, shipped):
            if fmt == Q4:
                ts = [m.time for m in (got["shipped"], got["tuned"]) if m is not None]
                if ts:
                    best[label] = min(ts)
        ta = [m.time for m in (a["shipped"], a["tuned"]) if m is not None]
        print("with each kernel at the faster of its shipped and tuned configs, both re-timed in this run:")
        print_tokens(results, attn, c, best, min(ta) if ta else None)


if __name__ == "__main__":
    main()
