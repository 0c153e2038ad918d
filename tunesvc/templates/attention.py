"""Fused softmax attention, O = softmax(Q·Kᵀ·scale)·V, with a streaming softmax; grouped-query.

Two templates share one kernel source: ``attention`` and ``attention_causal``.
The mask changes what is computed, so it is part of the problem key, never a
tuned parameter. The shape is ``BxHqxHkvxQxKVxD``; Q (B, Hq, Q, D), K and V
(B, Hkv, KV, D), Hq a multiple of Hkv: query head h attends with KV head
h // (Hq / Hkv), as llama's ``repeat_kv`` and vLLM lay them out (Hkv = Hq is
multi-head attention, Hkv = 1 multi-query). A shape of five dimensions,
``BxHxQxKVxD``, is Hkv = Hq. Each KV head is read once for all its query heads.
Causal attention aligns the queries to the end of the keys (query i sees keys
j <= i + KV - Q, as when decoding after a KV cache), so it needs Q <= KV. The
scale is an input (a one-element float32 buffer), default 1/sqrt(D). float16
stores Q, K, V and O in half (a KV cache of half the bytes) where the device
has cl_khr_fp16; scores, softmax and sums are float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidShapeError
from ..identity import platform_label
from ..types import Config
from .base import DTYPE_BYTES, DTYPES, BufferSpec, Constraint, Context, KernelTemplate, Launch, Offset, Param, Plan, Probe, ceil_div, pow2_ceil, probe_of

MAX_HEAD_DIM = 256
#: queries per head up to which a problem is decode (memory-bound) rather than prefill
DECODE_MAX_Q = 16
SHAPE_TEXT = "BxHqxHkvxQxKVxD"


def gqa_shape(shape) -> tuple[int, ...]:
    """The six dimensions (B, Hq, Hkv, Q, KV, D) of a shape; five are (B, H, Q, KV, D), Hkv = H."""
    shape = tuple(shape)
    return shape[:2] + shape[1:] if len(shape) == 5 else shape


def _dims(x: Context) -> tuple[int, ...]:
    """A constraint's shape as six dimensions (a caller may give five)."""
    return gqa_shape(x.shape)


def rows(shape) -> int:
    """Query rows per KV head: its query heads times the queries."""
    b, hq, hkv, q, kv, d = gqa_shape(shape)
    return hq // hkv * q


def _chunk(c: Config, kv: int) -> int:
    """Keys per split, in whole blocks unless MAP=1 (as CHUNK in attention.cl)."""
    per_split = ceil_div(kv, c["SPLIT"])
    return per_split if c["MAP"] == 1 else ceil_div(per_split, c["KB"]) * c["KB"]


def _out_vectors(c: Config, d: int) -> int:
    return c["QPG"] * d // c["DV"]


def _registers(c: Config, x: Context) -> int:
    """Floats of output each work-item keeps in registers (MAP=1, 2: its queries and outputs)."""
    if c["MAP"] > 0:
        return 2 * c["QPG"] * _dims(x)[5]
    return ceil_div(_out_vectors(c, _dims(x)[5]), c["WG"]) * c["DV"]


def _units(c: Config, shape) -> int:
    """MAP=1, 2 work-items: one per (KV head, row block, split)."""
    b, hq, hkv, q, kv, d = gqa_shape(shape)
    return b * hkv * ceil_div(rows(shape), c["QPG"]) * c["SPLIT"]


def _threads_have_work(c: Config, x: Context) -> bool:
    if c["MAP"] > 0:  # at least two work-groups, so every compute unit of a small CPU gets one
        return c["WG"] == 1 or 2 * c["WG"] <= _units(c, x.shape)
    # 32 work-items are always allowed, so the default config is valid for every shape
    return c["WG"] <= max(32, c["QPG"] * c["KB"], _out_vectors(c, _dims(x)[5]))


def _local_bytes(c: Config, d: int) -> int:
    return 4 * (c["QPG"] * d + c["QPG"] * c["KB"] + 3 * c["QPG"] + (2 * c["KB"] * d if c["LKV"] else 0))


#: platforms whose prefetch() compiles to nothing (measured: PVO=2 times as PVO=0 on PoCL 3.1, every run)
NO_PREFETCH = ("PoCL",)


def _prefetch_acts(c: Config, x: Context) -> bool:
    return c["PVO"] != 2 or platform_label(x.known_device.platform) not in NO_PREFETCH


def _fits_work_group(c: Config, x: Context) -> bool:
    return c["WG"] <= x.known_device.max_work_group_size and c["WG"] <= x.known_device.max_work_item_sizes[0]


class Attention(KernelTemplate):
    """Fused softmax attention with an online softmax and flash-decoding splits."""

    name = "attention"
    description = "O = softmax(Q·Kᵀ·scale)·V fused, grouped-query (shape BxHqxHkvxQxKVxD), online softmax, split-KV decoding"
    causal = False
    # absolute, so subclasses defined elsewhere (tests, users) still find it
    source_file = str(Path(__file__).with_name("attention.cl"))
    kernel_names = ("attention", "attention_combine", "attention_pack_k")
    dims = ("B", "Hq", "Hkv", "Q", "KV", "D")
    dtypes = ("float32", "float16")
    default_shape = (1, 8, 8, 1, 4096, 128)
    bound = "read_bandwidth"  # for decode; bound_for() says per shape
    params = (
        Param("QPG", (1, 2, 4, 8, 16), 1, "query rows (heads of a group x queries) per work-group"),
        Param("KB", (8, 16, 32, 64), 16, "keys per block of the streaming softmax"),
        Param("DV", (1, 2, 4, 8, 16), 1, "head-dimension vector width of K and V loads (16: the tiled CPU mappings only)"),
        Param("WG", (1, 4, 16, 32, 64, 128), 32, "work-items per work-group"),
        Param("LKV", (0, 1), 0, "stage each block of K and V in local memory"),
        Param("SPLIT", (1, 2, 4, 8, 16, 32), 1, "work-groups per query block along KV; above 1 a second pass combines them"),
        Param("MAP", (0, 1, 2, 3), 0, "0: a work-group shares a query block (GPUs); 1: one work-item streams the keys of QPG "
              "rows (CPUs); 2, 3: one work-item holds QPG x KB scores in vectors, K packed first (2: prefill) or read in "
              "place (3: decode) (CPUs)"),
        Param("PVO", (0, 1, 2), 0, "MAP=2, 3: order of P·V, 0: by head-dim chunk (V down its columns), 1: by key (V row by "
              "row), 2: as 0 with the block's V rows prefetched"),
    )
    constraints = (
        Constraint("vector_divides_head_dim", lambda c, x: _dims(x)[5] % c["DV"] == 0),
        Constraint("queries_per_group_not_beyond_rows", lambda c, x: c["QPG"] <= pow2_ceil(rows(x.shape))),
        Constraint("key_block_not_beyond_kv", lambda c, x: c["KB"] <= max(16, pow2_ceil(_dims(x)[4]))),
        Constraint("every_split_has_keys", lambda c, x: c["SPLIT"] == 1 or (c["SPLIT"] - 1) * _chunk(c, _dims(x)[4]) < _dims(x)[4]),
        # MAP=1, 2 hold whole rows privately: they live in the CPU's L1 more than in its registers
        Constraint("registers_bounded", lambda c, x: _registers(c, x) <= (1024 if c["MAP"] > 0 else 64)),
        Constraint("threads_have_work", _threads_have_work),
        # groups of under 16 work-items leave a GPU's lanes idle; MAP=1, 2 have no group work
        Constraint("small_groups_only_unshared", lambda c, x: c["MAP"] > 0 or c["WG"] >= 16),
        # MAP=1 walks keys one at a time from global memory: one value each of KB and LKV
        Constraint("unshared_has_no_blocks", lambda c, x: c["MAP"] != 1 or (c["KB"] == 16 and c["LKV"] == 0)),
        # MAP=2, 3 keep a block's scores in one OpenCL vector (8 or 16 lanes) and V in chunks of 4 or 8
        Constraint("tiles_in_vectors", lambda c, x: c["MAP"] < 2 or (c["KB"] <= 16 and c["DV"] >= 4 and c["LKV"] == 0)),
        # 16 lanes are one AVX-512 register (or two AVX2 ones): measured 1.11-1.24x DV=8's decode rate on
        # both CPU drivers (float16 K/V on Intel's runtime the most); the shared and streamed mappings
        # load and sum DV lanes as scalars (1, 2, 4 or 8: CUDA has no wider float vector)
        Constraint("sixteen_lanes_only_tiled", lambda c, x: c["DV"] <= 8 or c["MAP"] >= 2),
        # they are written in OpenCL vectors for CPU compilers; a GPU build of them streams as MAP=1
        Constraint("value_order_only_tiled", lambda c, x: c["MAP"] >= 2 or c["PVO"] == 0),
        # PVO=2 where prefetch() does nothing is PVO=0 again: a duplicate a short search can spend itself on
        Constraint("prefetch_where_it_acts", _prefetch_acts, needs_device=True),
        Constraint("tiles_only_on_cpus", lambda c, x: c["MAP"] < 2 or x.known_device.device_type == "cpu", needs_device=True),
        Constraint("work_group_size", _fits_work_group, needs_device=True),
        Constraint("local_memory", lambda c, x: _local_bytes(c, _dims(x)[5]) <= x.known_device.local_mem_size, needs_device=True),
    )

    def parse_shape(self, shape):
        """``BxHqxHkvxQxKVxD``, or the five dimensions ``BxHxQxKVxD`` of multi-head attention
        (Hkv = Hq), always returned as six."""
        if isinstance(shape, str) and len(shape.strip().split("x")) == 5:
            shape = shape.strip().lower().split("x")
            shape = "x".join(shape[:2] + shape[1:])
        elif not isinstance(shape, str):
            try:
                shape = gqa_shape(shape)
            except TypeError:
                pass  # not a sequence: the base says so
        return super().parse_shape(shape)

    def validate_shape(self, shape) -> None:
        b, hq, hkv, q, kv, d = shape
        if d > MAX_HEAD_DIM:
            raise InvalidShapeError(f"head dim D={d} is above {MAX_HEAD_DIM}; {self.name} takes {SHAPE_TEXT} with D <= {MAX_HEAD_DIM}")
        if hq % hkv:
            raise InvalidShapeError(f"Hq={hq} query heads are not a multiple of Hkv={hkv} KV heads; {self.name} takes {SHAPE_TEXT} "
                                    f"with Hq a multiple of Hkv (q (B, Hq, Q, D), k and v (B, Hkv, KV, D))")
        if self.causal and q > kv:
            raise InvalidShapeError(f"causal attention needs Q <= KV (queries align to the end of the keys); got Q={q}, KV={kv}")

    def bound_for(self, shape) -> str:
        """Decode (few queries) reads K and V once and writes little: read bandwidth; prefill is
        compute: FLOP/s."""
        return "read_bandwidth" if gqa_shape(shape)[3] <= DECODE_MAX_Q else "flops"

    def plan(self, config: Config, shape, dtype: str) -> Plan:
        b, hq, hkv, q, kv, d = shape = gqa_shape(shape)
        bh, split, wg = b * hkv, config["SPLIT"], config["WG"]
        storage = DTYPES[dtype][0]
        groups = bh * ceil_div(rows(shape), config["QPG"]) * split
        if config["MAP"] > 0:  # one work-item, not one work-group, per (KV head, row block, split)
            groups = ceil_div(groups, wg)
        buffers = [
            BufferSpec("Q", (b, hq, q, d), storage, "in"),
            BufferSpec("K", (b, hkv, kv, d), storage, "in"),
            BufferSpec("V", (b, hkv, kv, d), storage, "in"),
            BufferSpec("scale", (1,), np.float32, "in"),
            BufferSpec("O", (b, hq, q, d), storage, "out"),
        ]
        ins: tuple[str | Offset, ...] = ("Q", Offset("Q"), "K", Offset("K"), "V", Offset("V"), "scale", Offset("scale"))
        launches, cwg = [], 64
        if config["MAP"] == 2:  # K packed into blocks of KB keys first (timed too)
            slots = bh * ceil_div(kv, config["KB"]) * config["KB"]
            buffers.append(BufferSpec("Kt", (slots, d), np.float32, "scratch"))
            launches.append(Launch("attention_pack_k", (ceil_div(slots, cwg) * cwg,), (cwg,), ("K", Offset("K"), "Kt")))
            ins += ("Kt",)
        if split == 1:
            launches.append(Launch("attention", (groups * wg,), (wg,), (*ins, "O")))
        else:
            buffers += [BufferSpec("Opart", (bh, split, rows(shape), d), np.float32, "scratch"),
                        BufferSpec("ML", (bh, split, rows(shape), 2), np.float32, "scratch")]
            launches += [Launch("attention", (groups * wg,), (wg,), (*ins, "Opart", "ML")),
                         Launch("attention_combine", (ceil_div(b * hq * q * d, cwg) * cwg,), (cwg,), ("Opart", "ML", "O"))]
        defines = {**config, "TS_BHKV": bh, "TS_GQ": hq // hkv, "TS_Q": q, "TS_KV": kv, "TS_D": d,
                   "CAUSAL": int(self.causal), "TS_FP16": int(dtype == "float16")}
        return Plan(tuple(buffers), tuple(launches), defines)

    def probe(self, plan: Plan, fraction: float) -> Probe | None:
        # A work-group (or work-item) per (KV head, row block, split) unit; the first units alone
        # write the first heads' rows. K's packing (when there) runs in full; the combining pass
        # after a K split is left out, so the estimate does not count it.
        names = [launch.kernel for launch in plan.launches]
        main = names.index("attention")
        return probe_of(plan.launches[:main], plan.launches[main], fraction)

    def make_inputs(self, shape, dtype: str, rng: np.random.Generator):
        b, hq, hkv, q, kv, d = gqa_shape(shape)
        storage = DTYPES[dtype][0]
        # Scores of a few units, so the softmax is neither flat nor one-hot and a missed or
        # repeated key moves the output well beyond the tolerance.
        return {
            "Q": rng.standard_normal((b, hq, q, d)).astype(storage),
            "K": rng.standard_normal((b, hkv, kv, d)).astype(storage),
            "V": rng.uniform(-1, 1, (b, hkv, kv, d)).astype(storage),
            "scale": np.array([1.0 / np.sqrt(d)], dtype=np.float32),
        }

    def reference(self, inputs, shape):
        return {"O": attention_reference(inputs["Q"], inputs["K"], inputs["V"], float(inputs["scale"][0]), self.causal)}

    def tolerance(self, dtype: str, shape) -> float:
        # Scores of a few units carry ~D·eps of rounding into the exponent; the weighted sum of
        # KV values adds ~sqrt(KV)·eps. fp16 storage rounds inputs and output once more.
        b, hq, hkv, q, kv, d = gqa_shape(shape)
        eps = 2.0**-24
        return 64 * eps * (d + np.sqrt(kv)) + (4 * 2.0**-11 if dtype == "float16" else 0)

    def pairs(self, shape) -> float:
        """(query, key) pairs that are not masked, per query head."""
        b, hq, hkv, q, kv, d = gqa_shape(shape)
        if not self.causal:
            return float(q * kv)
        off = kv - q
        # query i sees min(kv, i + off + 1) keys; with q <= kv that is i + off + 1
        return float(q * (off + 1) + q * (q - 1) / 2)

    def flops(self, shape) -> float:
        b, hq, hkv, q, kv, d = gqa_shape(shape)
        return 4.0 * d * b * hq * self.pairs(shape)  # Q·Kᵀ and P·V, a multiply and an add each

    def bytes_moved(self, shape, dtype: str) -> float:
        """Q and O once per query head, K and V once per KV head."""
        b, hq, hkv, q, kv, d = gqa_shape(shape)
        return float(DTYPE_BYTES[dtype] * b * d * (2 * hq * q + 2 * hkv * kv))


class AttentionCausal(Attention):
    """Fused causal softmax attention (queries aligned to the end of the keys)."""

    name = "attention_causal"
    description = "causal O = softmax(mask(Q·Kᵀ·scale))·V fused, grouped-query (shape BxHqxHkvxQxKVxD, Q <= KV), online softmax"
    causal = True


def attention_reference(q, k, v, scale: float, causal: bool) -> np.ndarray:
    """float64 attention, one query head at a time so long sequences fit in memory; query head
    j reads KV head j // (Hq / Hkv)."""
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    b, h, nq, d = q64.shape
    nkv, group = k64.shape[2], h // k64.shape[1]
    out = np.empty((b, h, nq, d))
    mask = np.arange(nkv)[None, :] > (np.arange(nq)[:, None] + nkv - nq) if causal else None
    for i in range(b):
        for j in range(h):
            s = q64[i, j] @ k64[i, j // group].T * scale
            if mask is not None:
                s[mask] = -np.inf
            s -= s.max(axis=1, keepdims=True)
            p = np.exp(s)
            out[i, j] = (p @ v64[i, j // group]) / p.sum(axis=1, keepdims=True)
    return out
