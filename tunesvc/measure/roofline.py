"""Roofline ceilings of a device, measured once and stored with it.

Copy bandwidth comes from a copy kernel over buffers far larger than any cache (bytes read
plus bytes written, per second); read bandwidth from a kernel that sums the same buffer to one
value per work-group (bytes read per second: what reductions and decode attention do, and a
CPU's copy pays a read for ownership of every line it writes, so reading runs faster than
copying); arithmetic throughput from a kernel of independent FMA chains that touches memory
once. All are written against the dialect prelude, so they run on every backend. A CPU's
physical FMA peak, from its clock, vector width and cores, is stored beside the measured
figure. A measurement's fraction of the ceiling that bounds its template (``bound_for``) says
how close to the device's limit it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import numpy as np

from ..templates.base import Launch, prelude

PROBE_SOURCE = r"""
#ifndef CHAINS
#define CHAINS 12
#endif
#ifndef ITERS
#define ITERS 64
#endif
#ifndef READ_WG
#define READ_WG 256
#endif
#ifndef READ_RUN
#define READ_RUN 1
#endif
#ifndef READ_CHUNK
#define READ_CHUNK 16384
#endif
/* One element per work-item, neighbours on neighbouring addresses: coalesced on GPUs,
   one vector load and store per group of work-items on CPUs that vectorise across them. */
KERNEL void ts_copy(const GLOBAL float* RESTRICT src, GLOBAL float* RESTRICT dst)
{
    const long i = (long)GRP(0) * LSZ(0) + LID(0);
    dst[i] = src[i];
}

/* Read-mostly: each work-group sums READ_CHUNK consecutive floats to one value (one float
   written per READ_CHUNK read). Each step a work-item adds READ_RUN consecutive floats, the
   group's work-items side by side: READ_RUN=1 puts neighbours on neighbouring addresses
   (coalesced on GPUs, one vector load per bundle of work-items on CPUs that vectorise across
   them); READ_WG=1 has one work-item stream the chunk, its READ_RUN adds vectorised within it
   (how the fastest CPU reductions read). A tree in local memory combines the group
   (READ_WG a power of two). */
KERNEL void ts_read(const GLOBAL float* RESTRICT src, GLOBAL float* RESTRICT out)
{
    LOCAL_MEM float part[READ_WG];
    const int lid = LID(0);
    const GLOBAL float* p = src + (long)GRP(0) * READ_CHUNK + lid * READ_RUN;
    float acc[READ_RUN];
    UNROLL_ALL for (int r = 0; r < READ_RUN; r++) acc[r] = 0.0f;
    for (int k = 0; k < READ_CHUNK / (READ_WG * READ_RUN); k++) {
        UNROLL_ALL for (int r = 0; r < READ_RUN; r++) acc[r] += p[r];
        p += READ_WG * READ_RUN;
    }
    UNROLL_ALL for (int r = 1; r < READ_RUN; r++) acc[0] += acc[r];
    part[lid] = acc[0];
    BARRIER();
    for (int s = READ_WG / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] += part[lid + s];
        BARRIER();
    }
    if (lid == 0) out[GRP(0)] = part[0];
}

/* CHAINS multiply-add chains, each step of chain c also adding chain c+1 (a rotation): the
   CHAINS FMAs of one step are independent, but no step can start before the one above it.
   Fully independent chains let the compiler schedule them one chain after another (fewest
   live registers), which on a CPU left 2 chains in flight and measured the FMA latency, not
   its throughput (40% of the peak). The loops unroll fully, so no loop is left inside a
   work-item (CPU OpenCL vectorises across work-items only then); the store keeps the chains
   alive. 12 chains of 8-wide vectors fill the 16 AVX registers without spilling; with
   AVX-512 they take 12 of 32, and 12 independent FMAs still cover two pipes of 4-cycle
   latency. On PoCL and Intel's CPU runtime the kernel runs 8 work-items per AVX2 FMA;
   Intel's runtime forced to scalar code (CL_CONFIG_CPU_VECTORIZER_MODE=1) measured 1/8. */
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
# 2M work-items: every compute unit full many times over, yet ~20 ms a run on a 2-core CPU,
# so the best of FMA_RUNS short runs is likely to catch a moment a shared machine is quiet
FMA_ITEMS = 1 << 21
FMA_RUNS = 10
RUNS = 5  # copy and read runs (per read layout)
READ_CHUNK = 16384  # floats each work-group sums: 64 KiB
# (work-group size, floats per work-item per step) of the read kernel. CPU drivers vectorise
# differently (PoCL across work-items or within one, Intel's runtime best within one at 16
# floats a step: 18 GB/s there against 14.5 at 32 and 13 across 16 work-items), so the probe
# keeps the fastest of the shapes the fastest CPU reductions take. GPUs read coalesced.
CPU_READ_LAYOUTS = ((1, 16), (1, 32), (16, 1))
GPU_READ_LAYOUTS = ((256, 1),)

# Bounds a template may declare (``bound_for``): "flops" (FMA ceiling), "bandwidth" (copy:
# reads and writes alike) and "read_bandwidth" (read-mostly: reductions, decode attention, GEMV).
BANDWIDTH_BOUNDS = ("bandwidth", "read_bandwidth")
LABELS = {"flops": "FLOP", "bandwidth": "BW", "read_bandwidth": "read BW"}


@dataclass(frozen=True)
class Ceilings:
    """Measured limits of one device; the read bandwidth and the physical peak live in
    ``details`` (the stored row has no columns for them)."""

    gbps: float  # copy bandwidth, bytes read plus written
    gflops: float  # FMA throughput, 2 FLOP per FMA
    measured_at: str = ""
    details: Mapping | None = None  # how they were measured

    @property
    def read_gbps(self) -> float | None:
        """Read bandwidth (bytes read per second); None for ceilings stored before it was probed."""
        return (self.details or {}).get("read_gbps") or None

    @property
    def peak_gflops(self) -> float | None:
        """The physical FMA peak (a CPU's clock x lanes x FMA units x 2 x cores); None where unknown."""
        return (self.details or {}).get("peak_gflops") or None

    def of(self, bound: str) -> float:
        """The ceiling a bound is measured against: read-mostly kernels fall back to the copy
        bandwidth where no read figure is stored."""
        if bound == "read_bandwidth" and self.read_gbps:
            return self.read_gbps
        return self.gbps if bound in BANDWIDTH_BOUNDS else self.gflops

    def name_of(self, bound: str) -> str:
        """Which measured ceiling ``of(bound)`` is, in words."""
        if bound == "read_bandwidth" and self.read_gbps:
            return f"{self.read_gbps:.1f} GB/s read bandwidth"
        if bound in BANDWIDTH_BOUNDS:
            return f"{self.gbps:.1f} GB/s copy bandwidth"
        return f"{self.gflops:.1f} GFLOP/s FMA"


def label(bound: str) -> str:
    """A short name of the ceiling a bound uses, for table cells ('93% read BW')."""
    return LABELS.get(bound, bound)


def _copy_bytes(info, wanted: int) -> int:
    # two buffers; stay well inside the device's allocation and memory limits
    return int(min(wanted, info.max_alloc_size // 2, info.global_mem_size // 8)) // 4096 * 4096


def _best(device, program, launches, buffers, runs: int = RUNS) -> float:
    device.run(program, launches, buffers)  # warm-up: first-touch pages, lazy compiles
    return min(device.run(program, launches, buffers) for _ in range(runs))


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, int(n)).bit_length() - 1)


def read_bandwidth(device, src, nbytes: int) -> dict:
    """Bytes read per second summing ``nbytes`` of ``src`` (float32 ones) to one value per
    work-group, the best of the device type's layouts; each layout's sums are checked."""
    info = device.info
    layouts = CPU_READ_LAYOUTS if info.device_type == "cpu" else GPU_READ_LAYOUTS
    groups = nbytes // 4 // READ_CHUNK
    out = device.alloc(groups * 4)
    tried = {}
    for wg, run in layouts:
        wg = min(wg, _pow2_floor(info.max_work_group_size))
        program = device.build(prelude(device.dialect) + PROBE_SOURCE,
                               {"READ_WG": wg, "READ_RUN": run, "READ_CHUNK": READ_CHUNK}, ("ts_read",))
        launch = (Launch("ts_read", (groups * wg,), (wg,), ("src", "out")),)
        seconds = _best(device, program, launch, {"src": src, "out": out})
        sums = np.empty(groups, dtype=np.float32)
        device.read(out, sums)
        if not np.all(sums == READ_CHUNK):  # a probe that skips its reads measures nothing
            from ..errors import BackendError

            raise BackendError(f"the read-bandwidth probe (work-group {wg}, {run} floats a step) summed wrongly on "
                               f"{info.name} [{info.fingerprint.driver}]: its figure would mean nothing; try another driver")
        tried[f"{wg}x{run}"] = groups * READ_CHUNK * 4 / seconds * 1e-9
    best = max(tried, key=lambda k: tried[k])
    return {"read_gbps": tried[best], "read_bytes": groups * READ_CHUNK * 4, "read_layout": best, "read_layouts": tried}


def fma_throughput(device, program=None) -> tuple[float, float]:
    """(GFLOP/s, seconds) of the FMA kernel, the best of FMA_RUNS runs."""
    if program is None:
        program = device.build(prelude(device.dialect) + PROBE_SOURCE, {"CHAINS": FMA_CHAINS, "ITERS": FMA_ITERS}, ("ts_fma",))
    wg = min(256, device.info.max_work_group_size)
    seed, out = device.alloc(8), device.alloc(FMA_ITEMS * 4)
    # a = 0.5: each step multiplies a chain by at most 1.5, so 64 steps stay finite
    device.write(seed, np.array([0.5, 0.0], dtype=np.float32))
    fma = (Launch("ts_fma", (FMA_ITEMS,), (wg,), ("seed", "out")),)
    seconds = _best(device, program, fma, {"seed": seed, "out": out}, FMA_RUNS)
    return 2.0 * FMA_CHAINS * FMA_ITERS * FMA_ITEMS / seconds * 1e-9, seconds


def probe(device, copy_bytes: int | None = None) -> Ceilings:
    """Measure the copy and read bandwidth and FMA ceilings of an opened device (a few seconds).

    ``copy_bytes`` (per buffer) defaults to COPY_BYTES; a smaller one is for tests only,
    as a buffer that fits in a cache measures the cache."""
    info = device.info
    program = device.build(prelude(device.dialect) + PROBE_SOURCE, {"CHAINS": FMA_CHAINS, "ITERS": FMA_ITERS}, ("ts_copy", "ts_fma"))
    nbytes = _copy_bytes(info, copy_bytes or COPY_BYTES) // (READ_CHUNK * 4) * (READ_CHUNK * 4)
    src, dst = device.alloc(nbytes), device.alloc(nbytes)
    device.write(src, np.ones(nbytes // 4, dtype=np.float32))
    wg = min(256, info.max_work_group_size)
    items = nbytes // 4 // wg * wg
    copy = (Launch("ts_copy", (items,), (wg,), ("src", "dst")),)
    t_copy = _best(device, program, copy, {"src": src, "dst": dst})
    gbps = 2 * items * 4 / t_copy * 1e-9
    read = read_bandwidth(device, src, nbytes)
    gflops, t_fma = fma_throughput(device, program)
    details = {"copy_bytes": 2 * items * 4, "copy_seconds": t_copy, **read, "fma_items": FMA_ITEMS, "fma_chains": FMA_CHAINS,
               "fma_iters": FMA_ITERS, "fma_seconds": t_fma, "fma_runs": FMA_RUNS, "runs": RUNS, "work_group": wg}
    peak = physical_peak(device)
    if peak:
        details.update(peak_gflops=peak.pop("gflops"), peak=peak)
    return Ceilings(gbps, gflops, datetime.now(timezone.utc).isoformat(timespec="seconds"), details)


# ---- a CPU's physical FMA peak -----------------------------------------------------------------
def physical_peak(device) -> dict | None:
    """clock x float32 lanes x FMA units x 2 FLOP x cores of an x86 CPU device, with its terms;
    None for other devices (a GPU reports no lanes per compute unit through OpenCL)."""
    from ..identity import host_cpu

    info = device.info
    cpu = host_cpu()
    flags = cpu.get("flags") or frozenset()
    if info.device_type != "cpu" or "sse" not in flags:
        return None
    isa, lanes, units = _vector_unit(cpu)
    mhz, source = _clock_mhz(device, cpu)
    if not mhz:
        return None
    cores = max(1, info.compute_units // _threads_per_core())
    return {"gflops": mhz * 1e-3 * lanes * units * 2 * cores, "clock_mhz": mhz, "clock_source": source,
            "isa": isa, "lanes": lanes, "fma_units": units, "cores": cores}


def _vector_unit(cpu: dict) -> tuple[str, int, int]:
    """(instruction set, float32 lanes, FMA units per core) from the CPU's flags."""
    flags = cpu["flags"]
    # Two FMA pipes per core on current x86 server cores (Intel Haswell and later; Skylake-SP
    # Gold/Platinum and later for AVX-512; AMD Zen 2 to 5). Xeon Silver/Bronze with one AVX-512
    # FMA unit reach half of this. Without FMA (SSE, Sandy Bridge's AVX) a multiply and an add
    # pipe do one multiply-add per cycle: one unit.
    if "avx512f" in flags:
        # Zen 4 (AMD family 25) runs each 512-bit op as two 256-bit halves: AVX2's rate
        if cpu.get("vendor") == "AMD" and cpu.get("family") == "25":
            return "avx512f (256-bit datapath)", 8, 2
        return "avx512f", 16, 2
    if "avx" in flags:
        return ("avx2+fma", 8, 2) if "fma" in flags else ("avx", 8, 1)
    return "sse", 4, 1


def _clock_mhz(device, cpu: dict) -> tuple[float, str]:
    """The CPU clock in MHz and where it came from: the driver's maximum clock, the kernel's
    cpufreq maximum, or /proc/cpuinfo's (nominal in a VM). Boost clocks run above a nominal
    one, so a measured FMA figure can exceed the peak computed from it."""
    try:  # the OpenCL device behind an opened device, where it has one
        mhz = float(device.ctx.devices[0].max_clock_frequency)
        if mhz > 0:
            return mhz, "driver"
    except Exception:  # noqa: BLE001  (no context, no such query, a driver error: ask the OS)
        pass
    try:
        khz = float(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        if khz > 0:
            return khz / 1000, "cpufreq"
    except (OSError, ValueError):
        pass
    return float(cpu.get("mhz") or 0), "/proc/cpuinfo"


def _threads_per_core() -> int:
    """Hardware threads per core (2 with SMT): a CPU device's compute units count threads,
    and the threads of a core share its FMA units."""
    fields: dict = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return 1
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("siblings", "cpu cores"):
            fields.setdefault(key.strip(), value.strip())
        if len(fields) == 2:
            break
    try:
        return max(1, int(fields["siblings"]) // int(fields["cpu cores"]))
    except (KeyError, ValueError, ZeroDivisionError):
        return 1


def stored(store, device_key: str) -> Ceilings | None:
    row = store.ceilings(device_key)
    return Ceilings(row["gbps"], row["gflops"], row["measured_at"], row["details"]) if row else None


def measure_and_store(store, device, copy_bytes: int | None = None) -> Ceilings:
    c = probe(device, copy_bytes)
    store.put_device(device.info)
    store.put_ceilings(device.info.fingerprint.key, c.gbps, c.gflops, c.measured_at, dict(c.details or {}))
    return c


def fraction(template, shape, gflops: float | None, gbps: float | None, ceilings: Ceilings | None) -> tuple[str, float] | None:
    """(bound, achieved / ceiling) for a measurement, or None without ceilings or numbers."""
    if ceilings is None:
        return None
    bound = template.bound_for(tuple(shape))
    achieved = gbps if bound in BANDWIDTH_BOUNDS else gflops
    limit = ceilings.of(bound)
    if achieved is None or not limit:
        return None
    return bound, achieved / limit


def describe(bound: str, frac: float, ceilings: Ceilings) -> str:
    """'93% of the measured 26.1 GB/s read bandwidth ceiling': which ceiling the percentage is
    of, and for compute the fraction of the physical peak too where it is known."""
    text = f"{frac:.0%} of the measured {ceilings.name_of(bound)} ceiling"
    if bound == "read_bandwidth" and not ceilings.read_gbps:
        text += " (no read bandwidth stored for this device: run 'tunesvc devices --probe' again)"
    if bound not in BANDWIDTH_BOUNDS and ceilings.peak_gflops:
        text += f"; {frac * ceilings.gflops / ceilings.peak_gflops:.0%} of the {ceilings.peak_gflops:.1f} GFLOP/s physical peak"
    return text


# ---- in words ----------------------------------------------------------------------------------
def ceilings_line(c: Ceilings | None) -> str:
    if c is None:
        return "roofline ceilings: not measured (run 'tunesvc devices --probe')"
    read = (f"read bandwidth {c.read_gbps:.1f} GB/s" if c.read_gbps
            else "read bandwidth not measured (read-mostly kernels use copy; run 'tunesvc devices --probe' again)")
    return (f"roofline ceilings: copy bandwidth {c.gbps:.1f} GB/s; {read}; FMA {c.gflops:.1f} GFLOP/s, "
            f"{peak_text(c)} (measured {c.measured_at})")


def peak_text(c: Ceilings) -> str:
    """'115% of the physical peak 156.5 GFLOP/s (2 cores x 2445 MHz (driver) x 8 lanes avx2+fma
    x 2 FMA units x 2 FLOP; ...)': the measured FMA figure against the hardware's."""
    p = (c.details or {}).get("peak")
    if not c.peak_gflops or not p:
        return "physical peak unknown"
    frac = c.gflops / c.peak_gflops
    above = "; above 100%: the cores ran faster than the reported clock (boost)" if frac > 1 else ""
    return (f"{frac:.0%} of the physical peak {c.peak_gflops:.1f} GFLOP/s ({p['cores']} cores x {p['clock_mhz']:.0f} MHz "
            f"({p['clock_source']}) x {p['lanes']} lanes {p['isa']} x {p['fma_units']} FMA units x 2 FLOP{above})")


def record_fraction(record, ceilings: Ceilings | None) -> tuple[str, float] | None:
    """The roofline fraction of a stored record, or None (no ceilings, unknown template, failed)."""
    from .. import templates
    from ..errors import UsageError

    m = record.measurement
    if ceilings is None or not m.ok:
        return None
    try:
        tpl = templates.get(record.template)
    except UsageError:  # a user template that is not loaded in this process
        return None
    return fraction(tpl, record.shape, m.gflops, m.gbps, ceilings)
