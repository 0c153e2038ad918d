"""The importer on the worst inputs of issue 11: time and peak memory per MB, and the fuzz count.

Each input is built here, then imported by ``tunesvc.cache.exchange.import_files`` in a child
process of its own into a copy of a small database, so its peak memory (VmHWM) is its alone; the
child's memory before the import (the interpreter, numpy, tunesvc) is given beside it. Time and
memory are per MB of the file as given (most are .gz) and per MB of what it unpacks to. Then the
fuzz tests (tests/test_import_fuzz.py) run with more examples each, and the examples hypothesis
tried are counted from its statistics.

    .venv/bin/python benchmarks/import_worst.py [--mb 50] [--fuzz-examples 200] [--dir /tmp/tunesvc-worst]

About 4 minutes on 2 busy cores with the defaults; --fuzz-examples 0 skips the fuzz run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from db_helpers import CPU, GPU, make_records, valid_configs  # noqa: E402

from tunesvc import templates  # noqa: E402
from tunesvc.cache import Store  # noqa: E402
from tunesvc.cache.exchange import FORMAT, MAX_SHORT_LINES  # noqa: E402
from tunesvc.cache.schema import EXPORT_FIELDS, record_to_row  # noqa: E402
from tunesvc.cache.validate import MAX_LINE, MIN_LINE  # noqa: E402

HEADER = (json.dumps({"format": FORMAT, "format_version": 1, "tunesvc_version": "0.1.0",
                      "created_at": "2025-01-01T00:00:00+00:00"}) + "\n").encode()
MB = 1 << 20
CHILD = """
import json, re, sys, time, resource
from tunesvc.cache.exchange import import_files
from tunesvc.errors import TunesvcError

def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

base = hwm()
t0, c0 = time.perf_counter(), time.process_time()
try:
    s = import_files([sys.argv[1]], sys.argv[2])
    outcome = f"read {s.read}: added {s.added}, skipped {sum(s.skipped.values())}, rejected {sum(s.rejected.values())}"
except TunesvcError as e:
    outcome = "refused: " + re.sub(r"^'[^']*'(: | is )?", "", str(e)).strip()[:110]
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "base_mib": base,
                  "peak_mib": hwm(), "outcome": outcome}))
"""


def _lines(records) -> list[bytes]:
    return [json.dumps({k: (json.loads(v) if k == "config" else v) for k, v in record_to_row(r).items()
                        if k in EXPORT_FIELDS}, separators=(",", ":")).encode() + b"\n" for r in records]


def _repeat(unit: bytes, size: int) -> bytes:
    return unit * max(1, size // len(unit))


def _kernel_tuner(entries: bytes, name: str = "matmul", head: str = "") -> bytes:
    tpl = templates.get("matmul")
    params = {p.name: list(p.values) for p in tpl.params}
    return (f'{{"device_name": "NVIDIA A100", "kernel_name": "{name}", "problem_size": [64, 64, 64], {head}'
            f'"tune_params_keys": {json.dumps(list(params))}, "tune_params": {json.dumps(params)}, "cache": {{').encode() \
        + entries + b'"end": {"time": "InvalidConfig"}}}'


def inputs(size: int) -> dict:
    """name -> (file name, unpacked bytes): the worst inputs of the issue and their neighbours."""
    record = _lines(make_records(CPU, shapes=((64, 64, 64),), n=1))[0]
    one_device = _lines(make_records(GPU, shapes=[(64 * (i + 1), 64, 64) for i in range(8)], n=125))
    distinct = b"".join(line.replace(b'"driver":"550.54"', f'"driver":"d{d}"'.encode()) for d in range(60)
                        for line in one_device)
    config = json.dumps(dict(valid_configs((64, 64, 64), 1)[0]))[1:-1]
    entry = f'{{{config}, "time": 1.5, "times": [1.5, 1.6, 1.4], "compile_time": 20.0}}'
    return {
        "blank lines": ("blank.jsonl.gz", HEADER + _repeat(b"\n", size)),
        "one-character junk lines": ("junk.jsonl.gz", HEADER + _repeat(b"x\n", size)),
        "junk lines as long as the shortest record": ("long-junk.jsonl.gz", HEADER + _repeat(b"x" * MIN_LINE + b"\n", size)),
        "64 KiB lines of brackets inside a string": ("brackets.jsonl.gz",
                                                       HEADER + _repeat(b'{"reason": "' + b"[{" * (MAX_LINE // 2 - 10) + b'"}\n', size)),
        "over-long lines (1 MiB)": ("long.jsonl.gz", HEADER + _repeat(b"y" * MB + b"\n", size)),
        "one valid record repeated": ("repeated.jsonl.gz", HEADER + _repeat(record, size)),
        "60,000 distinct valid records": ("distinct.jsonl.gz", HEADER + distinct),
        "Kernel Tuner: one string of the whole file": ("string.json.gz", _kernel_tuner(b"", head='"note": "' + "z" * size + '", ')),
        "Kernel Tuner: entries of an unknown kernel": ("unknown.json.gz", _kernel_tuner(
            b"".join(f'"{i}": {entry}, '.encode() for i in range(size // (len(entry) + 12))), name="no_such_kernel")),
        "Kernel Tuner: one matmul entry repeated": ("kt.json.gz", _kernel_tuner(
            b"".join(f'"{i}": {entry}, '.encode() for i in range(size // (len(entry) + 12))))),
        "Kernel Tuner: nested 100,000 deep": ("deep.json", b'{"tune_params": ' + b"[" * 100_000 + b"]" * 100_000 + b', "cache": {}}'),
    }


def measure(folder: Path, base_db: Path, name: str, file_name: str, data: bytes) -> dict:
    path = folder / file_name
    path.write_bytes(gzip.compress(data, 9) if file_name.endswith(".gz") else data)
    db = folder / "t.db"
    shutil.copy(base_db, db)
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(db)], capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise SystemExit(f"{name}: the child failed:\n{out.stderr}")
    result = json.loads(out.stdout)
    result.update(name=name, file_mb=path.stat().st_size / MB, unpacked_mb=len(data) / MB)
    path.unlink()
    return result


def fuzz(examples: int) -> tuple[int, float]:
    """(examples hypothesis tried, seconds) over tests/test_import_fuzz.py."""
    started = time.perf_counter()
    env = {**os.environ, "TUNESVC_FUZZ_EXAMPLES": str(examples)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics",
                          str(HERE.parent / "tests" / "test_import_fuzz.py")], capture_output=True, text=True, env=env,
                         cwd=HERE.parent, timeout=1800)
    if out.returncode:
        raise SystemExit(f"the fuzz tests failed:\n{out.stdout[-3000:]}")
    counts = re.findall(r"(\d+) passing, (\d+) failing, and (\d+) invalid", out.stdout)  # one line per test and phase
    tried = sum(int(a) + int(b) + int(c) for a, b, c in counts)
    return tried, time.perf_counter() - started


def report(results: list[dict]) -> str:
    rows = ["| input | file | unpacks to | outcome | seconds | s / file MB | s / unpacked MB | peak memory (before) | MiB / unpacked MB |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        extra = r["peak_mib"] - r["base_mib"]
        rows.append(f"| {r['name']} | {r['file_mb']:.2f} MB | {r['unpacked_mb']:.1f} MB | {r['outcome']} | {r['wall']:.2f} "
                    f"| {r['wall'] / r['file_mb']:.2f} | {r['wall'] / r['unpacked_mb']:.3f} | {r['peak_mib']:.0f} MiB "
                    f"({r['base_mib']:.0f}) | {extra / r['unpacked_mb']:.2f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=50, help="unpacked size of each generated input, in MB")
    ap.add_argument("--fuzz-examples", type=int, default=200, help="hypothesis examples per fuzz test (0: no fuzz run)")
    ap.add_argument("--dir", default=None, help="where to build the inputs (default: a temporary folder)")
    args = ap.parse_args()
    folder = Path(args.dir or tempfile.mkdtemp(prefix="tunesvc-worst-"))
    folder.mkdir(parents=True, exist_ok=True)
    base_db = folder / "base.db"
    base_db.unlink(missing_ok=True)
    store = Store(base_db)
    store.put_many(make_records(CPU, n=3))
    store.close()
    print(f"inputs of {args.mb} MB unpacked; at most {MAX_SHORT_LINES} short lines or rejected records per file; {folder}")
    results = []
    for name, (file_name, data) in inputs(args.mb * MB).items():
        results.append(measure(folder, base_db, name, file_name, data))
        print(f"  {name}: {results[-1]['wall']:.2f} s, peak {results[-1]['peak_mib']:.0f} MiB: {results[-1]['outcome']}", flush=True)
    print(report(results))
    if args.fuzz_examples:
        tried, seconds = fuzz(args.fuzz_examples)
        print(f"\nfuzz: {tried} inputs tried by hypothesis over tests/test_import_fuzz.py "
              f"({args.fuzz_examples} examples per test, x4 for the shape and command-line tests) in {seconds:.0f} s; none failed")
    shutil.rmtree(folder, ignore_errors=True) if not args.dir else None


if __name__ == "__main__":
    main()
