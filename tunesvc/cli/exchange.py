"""``tunesvc export`` and ``tunesvc import``: share tuning databases as files."""

from __future__ import annotations

import click

from .common import CliUsageError, clean, db_option, device_filter_option, emit_json, json_option, library_errors


@click.command("export")
@click.argument("file", type=click.Path())
@db_option
@device_filter_option
@click.option("--template", default=None, help="Only this template.")
@click.option("--best-only", is_flag=True, help="Only the fastest valid config of each problem.")
@json_option
@library_errors
def export_cmd(file, db, device, template, best_only, as_json):
    """Write records to FILE as JSON Lines (gzip if FILE ends in .gz), in a stable order."""
    from ..cache.exchange import export

    s = export(file, db, device, template, best_only)
    if as_json:
        emit_json({"path": s.path, "records": s.records, "bytes": s.bytes})
        return
    click.echo(f"exported {s.records} records to {s.path} ({s.bytes} bytes)")


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@db_option
@click.option("--policy", type=click.Choice(["keep-fastest", "prefer-local", "prefer-incoming"]), default="keep-fastest",
              show_default=True, help="Which record wins when a config is both stored and imported: the faster one "
              "(never over this device's own, source 'local', measurements), the stored one, or the imported one "
              "(the only policy that replaces this device's own).")
@click.option("--source", default=None, help="Provenance label stored with every record (default: the file name).")
@click.option("--dry-run", is_flag=True, help="Validate and report what would change; write nothing.")
@json_option
@library_errors
def import_cmd(files, db, policy, source, dry_run, as_json):
    """Validate FILES (tunesvc exports, Kernel Tuner caches, T4 files) and merge them; a file that is not
    readable to its end changes nothing."""
    from ..cache.exchange import import_files

    s = import_files(files, db, policy, dry_run, source)
    if as_json:
        emit_json({"files": list(s.files), "policy": s.policy, "dry_run": s.dry_run, "read": s.read, "added": s.added,
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
