"""Roofline ceilings of a device, measured once and stored with it.

Bandwidth comes from a copy kernel over buffers far larger than any cache
(bytes read plus bytes written, per second); arithmetic throughput from a
kernel of independent FMA chains that touches memory once. Both are written
against the dialect prelude, so they run on every backend. A measurement's
fraction of the ceiling that bounds its template (``bound_for``) says how
close to the device's limit it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .templates.base import Launch, prelude

PROBE_SOURCE = r"""
#ifndef CHAINS
#define CHAINS 12
#endif
#ifndef ITERS
#define ITERS 64
#endif
/* One element per work-item, neighbours on neighbouring addresses: coalesced on GPUs,
   one vector load and store per group of work-items on CPUs that vectorise across them. */
KERNEL void ts_copy(const GLOBAL float* RESTRICT src, GLOBAL float* RESTRICT dst)
{
    const long i = (long)GRP(0) * LSZ(0) + LID(0);
    dst[i] = src[i];
}

/* CHAINS multiply-add chains, each step of chain c also adding chain c+1 (a rotation): the
   CHAINS FMAs of one step are independent, but no step can start before the one above it.
   Fully independent chains let the compiler schedule them one chain after another (fewest
   live registers), which on a CPU left 2 chains in flight and measured the FMA latency, not
   its throughput (40% of the peak). The loops unroll fully, so no loop is left inside a
   work-item (CPU OpenCL vectorises across work-items only then); the store keeps the chains
   alive. 12 chains of 8-wide vectors fill the 16 AVX registers without spilling. */
KERNEL void ts_fma(const GLOBAL float* RESTRICT seed, GLOBAL float* RESTRICT out)
{
    const int gid = GID(0);
    float acc[CHAINS];
    const float a = seed[0];
    UNROLL_ALL for (int c = 0; c < CHAINS; c++) acc[c] = (float)(gid + c) * 1e-7f;
    UNROLL_ALL for (int it = 0; it < ITERS; it++) {
        const float first = acc[0];
        UNROLL_ALL for (int c = 0; c < CHAINS - 1; c++) acc[c] = acc[c] * a + acc[c + 1];
        acc[CHAINS - 1] = acc[CHAINS - 1] * a + first;
    }
    float total = 0.0f;
    UNROLL_ALL for (int c = 0; c < CHAINS; c++) total += acc[c];
    out[gid] = total;
}
"""

COPY_BYTES = 512 * 2**20  # per buffer: far beyond any last-level cache today
FMA_CHAINS, FMA_ITERS = 12, 64
FMA_ITEMS = 1 << 22
RUNS = 5


@dataclass(frozen=True)
class Ceilings:
    """Measured limits of one device."""

    gbps: float  # copy bandwidth, bytes read plus written
    gflops: float  # FMA throughput, 2 FLOP per FMA
    measured_at: str = ""
    details: Mapping = None  # how they were measured

    def of(self, bound: str) -> float:
        return self.gbps if bound == "bandwidth" else self.gflops


def _copy_bytes(info, wanted: int) -> int:
    # two buffers; stay well inside the device's allocation and memory limits
    return int(min(wanted, info.max_alloc_size // 2, info.global_mem_size // 8)) // 4096 * 4096


def _best(device, program, launches, buffers, runs: int = RUNS) -> float:
    device.run(program, launches, buffers)  # warm-up: first-touch pages, lazy compiles
    return min(device.run(program, launches, buffers) for _ in range(runs))


def probe(device, copy_bytes: int | None = None) -> Ceilings:
    """Measure the bandwidth and FMA ceilings of an opened device (a few seconds).

    ``copy_bytes`` (per buffer) defaults to COPY_BYTES; a smaller one is for tests only,
    as a buffer that fits in a cache measures the cache."""
    from .cache.store import now_iso

    info = device.info
    program = device.build(prelude(device.dialect) + PROBE_SOURCE, {"CHAINS": FMA_CHAINS, "ITERS": FMA_ITERS}, ("ts_copy", "ts_fma"))
    nbytes = _copy_bytes(info, copy_bytes or COPY_BYTES)
    src, dst = device.alloc(nbytes), device.alloc(nbytes)
    device.write(src, np.ones(nbytes // 4, dtype=np.float32))
    wg = min(256, info.max_work_group_size)
    items = nbytes // 4 // wg * wg
    copy = (Launch("ts_copy", (items,), (wg,), ("src", "dst")),)
    t_copy = _best(device, program, copy, {"src": src, "dst": dst})
    gbps = 2 * items * 4 / t_copy * 1e-9

    fma_items = FMA_ITEMS  # millions of work-items: every compute unit full many times over
    seed, out = device.alloc(8), device.alloc(fma_items * 4)
    # a = 0.5: each step multiplies a chain by at most 1.5, so 64 steps stay finite
    device.write(seed, np.array([0.5, 0.0], dtype=np.float32))
    fma = (Launch("ts_fma", (fma_items,), (wg,), ("seed", "out")),)
    t_fma = _best(device, program, fma, {"seed": seed, "out": out})
    gflops = 2.0 * FMA_CHAINS * FMA_ITERS * fma_items / t_fma * 1e-9
    details = {"copy_bytes": 2 * items * 4, "copy_seconds": t_copy, "fma_items": fma_items, "fma_chains": FMA_CHAINS,
               "fma_iters": FMA_ITERS, "fma_seconds": t_fma, "runs": RUNS, "work_group": wg}
    return Ceilings(gbps, gflops, now_iso(), details)


def stored(store, device_key: str) -> Ceilings | None:
    row = store.ceilings(device_key)
    return Ceilings(row["gbps"], row["gflops"], row["measured_at"], row["details"]) if row else None


def measure_and_store(store, device, copy_bytes: int | None = None) -> Ceilings:
    c = probe(device, copy_bytes)
    store.put_device(device.info)
    store.put_ceilings(device.info.fingerprint.key, c.gbps, c.gflops, c.measured_at, dict(c.details))
    return c


def fraction(template, shape, gflops: float | None, gbps: float | None, ceilings: Ceilings | None) -> tuple[str, float] | None:
    """(bound, achieved / ceiling) for a measurement, or None without ceilings or numbers."""
    if ceilings is None:
        return None
    bound = template.bound_for(tuple(shape))
    achieved = gbps if bound == "bandwidth" else gflops
    limit = ceilings.of(bound)
    if achieved is None or not limit:
        return None
    return bound, achieved / limit


def describe(bound: str, frac: float, ceilings: Ceilings) -> str:
    unit = f"{ceilings.gbps:.1f} GB/s bandwidth" if bound == "bandwidth" else f"{ceilings.gflops:.1f} GFLOP/s FMA"
    return f"{frac:.0%} of the measured {unit} ceiling"


# ---- what the CLI prints ---------------------------------------------------------------------
def ceilings_in(db, device_key: str) -> Ceilings | None:
    """Stored ceilings of a device in the database file ``db`` (None: no file, no row)."""
    from .cache import Store
    from .errors import StoreError

    try:
        store = Store(db, readonly=True)
    except StoreError:  # no database yet: nothing measured
        return None
    try:
        return stored(store, device_key)
    finally:
        store.close()


def ceilings_line(c: Ceilings | None) -> str:
    if c is None:
        return "roofline ceilings: not measured (run 'tunesvc devices --probe')"
    return f"roofline ceilings: copy bandwidth {c.gbps:.1f} GB/s; FMA {c.gflops:.1f} GFLOP/s (measured {c.measured_at})"


def record_fraction(record, ceilings: Ceilings | None) -> tuple[str, float] | None:
    """The roofline fraction of a stored record, or None (no ceilings, unknown template, failed)."""
    from . import templates
    from .errors import UsageError

    m = record.measurement
    if ceilings is None or not m.ok:
        return None
    try:
        tpl = templates.get(record.template)
    except UsageError:  # a user template that is not loaded in this process
        return None
    return fraction(tpl, record.shape, m.gflops, m.gbps, ceilings)


def summary_line(result) -> str | None:
    """'roofline: ...' for a tune result's best config, when the device's ceilings are stored."""
    from . import templates

    if result.best is None or not result.best.ok:
        return None
    c = ceilings_in(result.db_path, result.device.fingerprint.key)
    f = fraction(templates.get(result.template), result.shape, result.best.gflops, result.best.gbps, c)
    return f"  roofline: {describe(f[0], f[1], c)}" if f else None
