"""The tuned kernel as a framework gets it: the kernel's rate by device events against the
numpy-facing call (``tunesvc.matmul``, ``attention``, ``reduce``) end to end, in the same run.

    .venv/bin/python benchmarks/end_to_end.py [--device opencl:0:0] [--db tuned.db] [--reps 10]

It tunes nothing: each case runs the config lookup answers (from ``--db``, else the default
database, else the shipped results). The kernel is timed as the tuner times it (device buffers
written once, ``Device.run``); each end-to-end call is timed on the wall clock around the call,
the median of ``--reps`` after a warm-up, interleaved with the kernel runs so that load from
others weighs on both alike. "in call" is the kernels' own event time inside the end-to-end
calls (the same kernels on the caller's arrays); "caller CPU" is the calling thread's CPU time
over its wall time during the calls: near 0% on PoCL, whose waits sleep; near 100% on Intel's
runtime, whose waiting thread runs work-groups itself (waiting by polling with sleeps instead
halves its speed on two cores). "in place" says whether the kernels used the inputs where they
are, copying none ("offset": some from the aligned address below them at an element offset, as
on Intel's runtime, which uses only 128-byte-aligned memory in place where numpy's arrays start
16 bytes past a page; ``--aligned`` gives it page-aligned inputs).
Shapes are the benchmarks' own (matmul.py, attention.py, reduce.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import tunesvc
from tunesvc import kernels
from tunesvc.devices import open_device
from tunesvc.lookup import lookup
from tunesvc.templates import get

from attention import DECODE, PREFILL  # noqa: E402  (benchmarks/ is the script's folder)
from reduce import CASES as REDUCE  # noqa: E402

CASES = [("matmul", (1024, 1024, 1024)), ("matmul", (2048, 2048, 2048)), *DECODE, *PREFILL, *REDUCE]


def numpy_call(name: str, inputs: dict, device, db):
    """The framework-facing call of a template on its inputs, as a closure."""
    if name == "matmul":
        return lambda: tunesvc.matmul(inputs["A"], inputs["B"], device=device, db=db)
    if name.startswith("attention"):
        scale = float(inputs["scale"][0])
        return lambda: tunesvc.attention(inputs["Q"], inputs["K"], inputs["V"], causal=name == "attention_causal",
                                         scale=scale, device=device, db=db)
    op = name.removeprefix("reduce_")
    return lambda: tunesvc.reduce(inputs["x"], op, axis=-1, device=device, db=db)


def aligned_copy(dev, array: np.ndarray) -> np.ndarray:
    """The array in memory the device allocates (page-aligned), as a framework's allocator could give."""
    out = dev.empty(array.shape, array.dtype)
    out[...] = array
    return out


def measure(name: str, shape, reps: int, dev, db, aligned: bool = False, dtype: str = "float32") -> dict:
    tpl = get(name)
    inputs = tpl.make_inputs(shape, dtype, np.random.default_rng(0))
    if aligned:
        inputs = {k: aligned_copy(dev, v) for k, v in inputs.items()}
    level = lookup(name, shape, dtype, dev.info, db).level
    prep = kernels.prepare(name, shape, dtype, dev, db)
    bufs = {b.name: dev.alloc(b.nbytes) for b in prep.plan.buffers}
    for b in prep.plan.buffers:
        if b.role == "in":
            dev.write(bufs[b.name], np.ascontiguousarray(inputs[b.name], b.dtype))
    call = numpy_call(name, inputs, dev, db)
    for _ in range(2):  # warm-up: the build, the driver's threads, first touches
        dev.run(prep.program, prep.plan.launches, bufs)
        call()
    kernel, wall, in_call, cpu = [], [], [], []
    staged = prep.staged
    for _ in range(reps):
        kernel.append(dev.run(prep.program, prep.plan.launches, bufs))
        t0, c0 = time.perf_counter(), time.thread_time()
        call()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
        in_call.append(prep.kernel_seconds)
    copied = (prep.staged - staged) / reps  # inputs copied per call
    in_place = "none" if copied == len(inputs) else "some" if copied else "offset" if prep.offsets else "all"
    work, unit = (tpl.flops(shape), "GFLOP/s") if tpl.bound_for(shape) == "flops" else (tpl.bytes_moved(shape, dtype), "GB/s")
    k, e = statistics.median(kernel), statistics.median(wall)
    return dict(unit=unit, level=level, kernel=work / k * 1e-9, in_call=work / statistics.median(in_call) * 1e-9,
                e2e=work / e * 1e-9, ratio=k / e, cpu=sum(cpu) / sum(wall),
                in_place=in_place,
                config=" ".join(f"{k}={v}" for k, v in prep.config.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="device id or name (default: the default device)")
    ap.add_argument("--db", default=None, help="tuning database lookup answers from (default: the default one)")
    ap.add_argument("--reps", type=int, default=10, help="timed end-to-end calls per case")
    ap.add_argument("--only", default=None, help="run only the cases whose template name contains this")
    ap.add_argument("--aligned", action="store_true",
                    help="inputs at page boundaries (Intel's runtime uses only arrays aligned to 128 bytes in place; numpy's are at 16)")
    args = ap.parse_args()
    dev = open_device(args.device)
    where = "page-aligned inputs" if args.aligned else "numpy's own arrays as inputs"
    print(f"device {dev.info.id} {dev.info.name} ({dev.info.fingerprint.driver}); {where}; median of {args.reps} calls")
    print(f"{'template':<17} {'shape':<20} {'config from':<13} {'unit':<7} {'kernel':>8} {'in call':>8} {'end to end':>10} "
          f"{'e2e/kernel':>10} {'in place':>8} {'caller CPU':>10}  config")
    for name, shape in CASES:
        if args.only and args.only not in name:
            continue
        r = measure(name, shape, args.reps, dev, args.db, args.aligned)
        print(f"{name:<17} {'x'.join(map(str, shape)):<20} {r['level']:<13} {r['unit']:<7} {r['kernel']:>8.1f} {r['in_call']:>8.1f} "
              f"{r['e2e']:>10.1f} {r['ratio']:>10.0%} {r['in_place']:>8} {r['cpu']:>10.0%}  {r['config']}", flush=True)

if __name__ == "__main__":
    main()
