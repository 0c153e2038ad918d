"""``tunesvc export`` and ``tunesvc import``: share tuning databases as files."""

from __future__ import annotations

import re

import click

from .common import (JSON_SCHEMA_VERSION, CliUsageError, clean, db_option, device_filter_option, emit_json, json_option,
                     library_errors)
from ..errors import UsageError, clip
from ..types import shape_str


_DIGITS = re.compile(r"[0-9]{1,15}")  # ASCII digits only ('²'.isdigit() is true, int('²') fails)


@click.command("export")
@click.argument("file", type=click.Path())
@db_option
@device_filter_option
@click.option("--template", default=None, help="Only this template.")
@click.option("--best-only", is_flag=True, help="Only the fastest valid config of each problem.")
@click.option("--format", "fmt", type=click.Choice(["tunesvc", "kerneltuner"]), default="tunesvc", show_default=True,
              help="tunesvc: JSON Lines of every record (docs/export.schema.json). kerneltuner: one problem's configs "
              "as a Kernel Tuner 1.5 cache file, which its simulation mode replays.")
@click.option("--shape", default=None, help="kerneltuner: only the records of this shape (e.g. 1024x1024x1024).")
@click.option("--dtype", default=None, help="kerneltuner: only the records of this element type.")
@json_option
@library_errors
def export_cmd(file, db, device, template, best_only, fmt, shape, dtype, as_json):
    """Write records to FILE as JSON Lines (gzip if FILE ends in .gz), in a stable order; or, with
    --format kerneltuner, one problem's records as a Kernel Tuner cache file."""
    if fmt == "kerneltuner":
        return _export_kerneltuner(file, db, device, template, best_only, shape, dtype, as_json)
    if shape is not None or dtype is not None:
        raise UsageError("--shape and --dtype pick the one problem of a Kernel Tuner export; add --format kerneltuner")
    from ..cache.exchange import export

    s = export(file, db, device, template, best_only)
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "format": "tunesvc", "path": s.path, "records": s.records,
                   "bytes": s.bytes})
        return
    click.echo(f"exported {s.records} records to {s.path} ({s.bytes} bytes)")


def _export_kerneltuner(file, db, device, template, best_only, shape, dtype, as_json) -> None:
    from ..cache.interop import export_kerneltuner

    if best_only:
        raise UsageError("--best-only does not go with --format kerneltuner: Kernel Tuner replays the whole measured space")
    s = export_kerneltuner(file, db, device, template, shape_argument(shape, "--shape"), dtype)
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "format": "kerneltuner", "path": s.path, "template": s.template,
                   "shape": shape_str(s.shape), "dtype": s.dtype, "device_key": s.device_key, "configs": s.configs,
                   "failed": s.failed, "skipped": s.skipped, "bytes": s.bytes})
        return
    click.echo(clean(f"exported {s.configs} configs ({s.failed} failed) of {s.template} {shape_str(s.shape)} {s.dtype} "
                     f"on {s.device_key} to {s.path} ({s.bytes} bytes) as a Kernel Tuner cache file"))
    if s.skipped:
        click.echo(f"  skipped {s.skipped} records of other parameters (an older template version)")


def shape_argument(text: str | None, flag: str) -> tuple[int, ...] | None:
    """A shape typed as NxMxK (or N,M,K): 1 to 8 whole numbers from 1 to 2**40; UsageError naming the flag."""
    if text is None:
        return None
    parts = [p.strip() for p in text.strip().replace(",", "x").split("x")]
    if not 1 <= len(parts) <= 8 or not all(_DIGITS.fullmatch(p) and 1 <= int(p) <= 2**40 for p in parts):
        raise UsageError(f"{flag} must be 1 to 8 whole numbers from 1 to 2**40 joined by 'x' (e.g. 4096x4096); "
                         f"got {clip(text, 40)}")
    return tuple(int(p) for p in parts)


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@db_option
@click.option("--policy", type=click.Choice(["keep-fastest", "prefer-local", "prefer-incoming"]), default="keep-fastest",
              show_default=True, help="Which record wins when a config is both stored and imported: the faster one "
              "(never over this device's own, source 'local', measurements), the stored one, or the imported one "
              "(the only policy that replaces this device's own).")
@click.option("--source", default=None, help="Provenance label stored with every record (default: the file name).")
@click.option("--dry-run", is_flag=True, help="Validate and report what would change; write nothing.")
@click.option("--problem-size", default=None,
              help="The problem size of Kernel Tuner or T4 files that give none (T4 files never do), e.g. 4096x4096.")
@json_option
@library_errors
def import_cmd(files, db, policy, source, dry_run, problem_size, as_json):
    """Validate FILES (tunesvc exports, Kernel Tuner caches, T4 files) and merge them; a file that is not
    readable to its end changes nothing."""
    from ..cache.exchange import import_files
    from ..cache.interop import problem_size as given_problem_size

    with given_problem_size(shape_argument(problem_size, "--problem-size")):
        s = import_files(files, db, policy, dry_run, source)
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "files": list(s.files), "policy": s.policy,
                   "dry_run": s.dry_run, "read": s.read, "added": s.added,
                   "replaced": s.replaced, "skipped": s.skipped, "rejected": s.rejected, "stale": s.stale,
                   "examples": s.examples, "status": "rejected" if _all_rejected(s) else "ok"})
    else:
        click.echo(clean_lines(import_report(s)))
    if _all_rejected(s):
        top = max(s.rejected.items(), key=lambda kv: kv[1])[0]
        raise CliUsageError(f"every record was rejected ({sum(s.rejected.values())}; most often: {top}); nothing was imported")


def clean_lines(text: str) -> str:
    """Each line cleaned for the terminal (file names and reasons quote what the files hold)."""
    return "\n".join(map(clean, text.split("\n")))


def _all_rejected(s) -> bool:
    return sum(s.rejected.values()) > 0 and not (s.added or s.replaced or sum(s.skipped.values()))


def import_report(s) -> str:
    verb = "would add" if s.dry_run else "added"
    lines = [f"{'dry run: ' if s.dry_run else ''}read {s.read} records from {len(s.files)} file(s); "
             f"{verb} {s.added}, {'would replace' if s.dry_run else 'replaced'} {s.replaced}, "
             f"skipped {sum(s.skipped.values())}, rejected {sum(s.rejected.values())} (policy {s.policy})"]
    lines += [f"  skipped {n}: {why}" for why, n in sorted(s.skipped.items())]
    for why, n in sorted(s.rejected.items(), key=lambda kv: -kv[1])[:10]:
        lines.append(f"  rejected {n}: {why} (at {', '.join(s.rejected_at[why])}{', ...' if n > 3 else ''})")
    if s.stale:
        lines.append(f"  {s.stale} record(s) are of an older template version: kept, never served as exact answers")
    return "\n".join(lines)
