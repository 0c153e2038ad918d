"""Kernel Tuner cache files and T4 result files as import sources.

:mod:`tunesvc.replay.files` parses them; here each recorded config becomes
an export line and goes through the same validation as a tunesvc export, for
the template registered under the file's kernel name. A file of a kernel with
no such template has every record rejected with that reason.
"""

from __future__ import annotations

import gzip
import zlib
from datetime import datetime, timezone
from pathlib import Path

from .. import templates
from .._version import __version__
from ..errors import ImportFileError, UsageError
from ..types import shape_str
from .validate import MAX_REASON, Checks, Rejected, validate

def looks_like_json_object(path: Path) -> bool:
    """Whether a file (gunzipped if need be) starts with '{' — a candidate Kernel Tuner or T4 file."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            return f.read(4096).lstrip()[:1] == b"{"
    except (OSError, EOFError, zlib.error):
        return False


def load_recorded(path: Path):
    """The header of a Kernel Tuner or T4 file, from a first pass that also checks the whole file (so a
    damaged one is refused before anything is written); ImportFileError if it is neither."""
    from ..replay.files import read_header

    return read_header(path)


def recorded_records(path: Path, space, checks: Checks | None = None):
    """Yield (entry number, row dict or Rejected) for each config of a recorded file, streamed (its
    second pass: memory stays bounded whatever the file's size)."""
    from ..replay.files import Damaged, entries

    checks = checks or Checks()
    try:
        tpl = templates.get(space.kernel_name) if not space.kernel_name.endswith(".py") else None
    except UsageError:
        tpl = None
    if tpl is None:
        reason = Rejected(f"no template is registered under the kernel name {space.kernel_name[:60]!r}; "
                          "register one with tunesvc.templates.register whose parameters match the file")
        for i in range(1, space.entries + 1):
            yield i, reason
        return
    base = _base_line(path, space, tpl)
    for i, (where, rec) in enumerate(entries(space), 1):
        try:
            if isinstance(rec, Damaged):
                raise Rejected(f"{where} {rec}")
            yield i, validate(_line(base, rec, tpl, space), checks)
        except Rejected as e:
            yield i, e


def _base_line(path: Path, space, tpl) -> dict:
    from ..replay.runner import recorded_fingerprint

    fp = recorded_fingerprint(space)  # the device as replay sees it: one key for one file, imported or replayed
    created = datetime.fromtimestamp(int(path.stat().st_mtime), timezone.utc).isoformat()  # re-imports are identical
    return {"template": tpl.name, "template_hash": tpl.source_hash, "dtype": "float32",
            "shape": shape_str(space.problem_size) if space.problem_size else "",
            "backend": fp.backend, "vendor": fp.vendor, "device_type": fp.device_type,
            "architecture": fp.architecture, "device_name": fp.name, "driver": fp.driver,
            "created_at": created, "tunesvc_version": __version__, "source": space.name}


def _line(base: dict, rec, tpl, space) -> dict:
    if not space.problem_size:
        raise Rejected(f"the {space.format} file gives no problem size; tunesvc keys every record by its shape")
    line = dict(base, config=dict(rec.config), status=rec.status, reason=rec.reason[:MAX_REASON],
                compile_seconds=rec.compile_seconds, time_median=None, time_min=None, time_max=None, time_iqr=None,
                runs=0, gflops=None, gbps=None)
    if rec.ok:
        t = rec.time
        samples = rec.samples or (t,)
        line.update(time_median=t, time_min=min(min(samples), t), time_max=max(max(samples), t), time_iqr=0.0,
                    runs=len(samples), gflops=_rate(tpl.flops, space.problem_size, t),
                    gbps=_rate(lambda s: tpl.bytes_moved(s, "float32"), space.problem_size, t))
    return line


def _rate(amount, shape, seconds: float):
    try:
        return amount(tuple(shape)) / seconds * 1e-9 if seconds > 0 else None
    except Exception:  # a template's FLOP count for a shape it rejects: the rate is unknown, the record is not
        return None
