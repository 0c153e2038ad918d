"""CLI commands that share tuning databases: export, import, tune-all."""

from __future__ import annotations

import click

from .cli import CliUsageError, db_option, emit_json, json_option, library_errors


@click.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@db_option
@click.option("--device", default=None, help="Only this device: a fingerprint key or a name substring.")
@click.option("--template", default=None, help="Only this template.")
@click.option("--best-only", is_flag=True, help="Only the fastest valid config of each problem.")
@json_option
@library_errors
def export_cmd(file, db, device, template, best_only, as_json):
    """Write records to FILE as JSON Lines (gzip if FILE ends in .gz), in a stable order."""
    from .cache.exchange import export

    s = export(file, db, device, template, best_only)
    if as_json:
        emit_json({"path": s.path, "records": s.records, "bytes": s.bytes})
        return
    click.echo(f"exported {s.records} records to {s.path} ({s.bytes} bytes)")


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@db_option
@click.option("--policy", type=click.Choice(["keep-fastest", "prefer-local", "prefer-incoming"]), default="keep-fastest",
              show_default=True, help="Which record wins when a config is both stored and imported.")
@click.option("--source", default=None, help="Provenance label stored with every record (default: the file name).")
@click.option("--dry-run", is_flag=True, help="Validate and report what would change; write nothing.")
@json_option
@library_errors
def import_cmd(files, db, policy, source, dry_run, as_json):
    """Validate FILES (tunesvc exports, Kernel Tuner caches, T4 files) and merge them in one transaction."""
    from .cache.exchange import import_files

    s = import_files(files, db, policy, dry_run, source)
    if as_json:
        emit_json({"files": list(s.files), "policy": s.policy, "dry_run": s.dry_run, "read": s.read, "added": s.added,
                   "replaced": s.replaced, "skipped": s.skipped, "rejected": s.rejected, "stale": s.stale,
                   "examples": s.examples, "status": "rejected" if _all_rejected(s) else "ok"})
    else:
        click.echo(import_report(s))
    if _all_rejected(s):
        top = max(s.rejected.items(), key=lambda kv: kv[1])[0]
        raise CliUsageError(f"every record was rejected ({sum(s.rejected.values())}; most often: {top}); nothing was imported")


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


@click.command("tune-all")
@click.option("--device", default=None, help="Device id (opencl:0:0), fingerprint or name substring; default: first GPU, else first CPU.")
@click.option("--preset", default="small", show_default=True,
              help="Shapes to tune: small (a quick run) or full (common transformer shapes, for a release).")
@click.option("--time-budget", type=float, default=None, help="Stop after this many seconds in all (run again to resume).")
@click.option("--template", "only", multiple=True, help="Only this template (repeatable); default: every built-in one.")
@click.option("--trials", type=int, default=None, help="Configs to measure per problem (default: the preset's).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Export file written at the end (default: tunesvc-<backend>-<device>-<preset>.jsonl.gz).")
@db_option
@json_option
@library_errors
def tune_all_cmd(device, preset, time_budget, only, trials, out, db, as_json):
    """Tune every built-in template over a preset of common shapes on one device; export the results."""
    import sys

    from .tune_all import tune_all

    bar = None if as_json else click.progressbar(length=1, label=f"tune-all {preset}", file=sys.stderr, show_pos=True,
                                                 show_eta=False, item_show_func=lambda s: s)

    def progress(p):
        if bar is not None:
            bar.length = max(p.total, 1)
            best = f"{p.best_gflops:.1f} GFLOP/s" if p.best_gflops is not None else ""
            bar.update(p.done - bar.pos, f"{p.problem} {best}")

    if bar is None:
        r = tune_all(device, preset, time_budget, db, out, list(only) or None, trials=trials)
    else:
        with bar:
            r = tune_all(device, preset, time_budget, db, out, list(only) or None, on_progress=progress, trials=trials)
    if as_json:
        emit_json({"device": r.device.id, "device_name": r.device.name, "preset": r.preset, "elapsed": r.elapsed,
                   "stopped": r.stopped, "export": {"path": r.export.path, "records": r.export.records},
                   "problems": [{"problem": str(o.problem), "status": o.status, "new_trials": o.new_trials,
                                 "best_time": o.best_time, "best_gflops": o.best_gflops, "reason": o.reason}
                                for o in r.outcomes], "failed": len(r.failed), "status": "failed" if r.failed else "ok"})
    else:
        click.echo(tune_all_report(r))
    if r.failed:
        raise click.ClickException(f"{len(r.failed)} of {len(r.outcomes)} problems failed: no config ran correctly "
                                   f"(first: {r.failed[0].problem}: {r.failed[0].reason})")


def tune_all_report(r) -> str:
    from .cli import table

    rows = [{"problem": str(o.problem), "status": o.status, "new": o.new_trials,
             "best GFLOP/s": f"{o.best_gflops:.2f}" if o.best_gflops is not None else "-", "note": o.reason[:70]}
            for o in r.outcomes]
    tuned = sum(o.status == "tuned" for o in r.outcomes)
    lines = [f"tune-all {r.preset} on {r.device.id} ({r.device.name}): {tuned} tuned, {len(r.failed)} failed, "
             f"{sum(o.status == 'done earlier' for o in r.outcomes)} done earlier, "
             f"{sum(o.status == 'skipped' for o in r.outcomes)} skipped; {r.elapsed:.0f} s" + (f"; stopped: {r.stopped}" if r.stopped else ""),
             table(rows, ["problem", "status", "new", "best GFLOP/s", "note"]),
             f"exported {r.export.records} records to {r.export.path}"]
    return "\n".join(lines)
