"""Synthetic records for exchange and lookup tests: real template configs, made-up times."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from pathlib import Path

from tunesvc import templates
from tunesvc.templates.base import Context
from tunesvc.types import Fingerprint, Measurement, Record, Timing

CPU = Fingerprint("opencl", "AMD", "cpu", "znver3", "pthread-AMD EPYC", "3.0")
GPU = Fingerprint("cuda", "NVIDIA", "gpu", "sm_80", "NVIDIA A100-SXM4-80GB", "550.54")


def valid_configs(shape, n, template="matmul", dtype="float32"):
    tpl = templates.get(template)
    ctx = Context(tuple(shape), dtype, None)
    return list(itertools.islice((c for c in tpl.all_configs() if tpl.is_valid(c, ctx)), n))


def make_records(fp=CPU, shapes=((64, 64, 64), (256, 256, 256)), n=5, base=1e-3, template="matmul", source="local"):
    """``n`` ok records per shape; config i takes base*(i+1) seconds, so config 0 is the fastest."""
    tpl = templates.get(template)
    out = []
    for shape in shapes:
        for i, c in enumerate(valid_configs(shape, n, template)):
            t = base * (i + 1)
            m = Measurement(c, "ok", timing=Timing(t, t * 0.9, t * 1.2, t * 0.1, 5), gflops=1.0 / t, gbps=2.0 / t, compile_seconds=0.25)
            out.append(Record(fp, tpl.name, tpl.source_hash, "float32", tuple(shape), m, "2025-01-01T00:00:00+00:00", "0.1.0", source))
    return out


def db_digest(path) -> str:
    """A digest of a database's logical content (every row of every table)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def file_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_lines(path):
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f]
