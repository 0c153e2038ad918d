"""``tunesvc tune``: one problem on one device, with a progress bar and a summary."""

from __future__ import annotations

import sys

import click

from .common import JSON_SCHEMA_VERSION, ceilings_in, clean, quiet, table, db_option, device_option, dtype_option, emit_json, fmt_time, json_option, library_errors
from ..types import shape_str
from .progress import Progress



def result_to_dict(r) -> dict:
    """A TuneResult as JSON: numbers as numbers, units in the key names."""
    m = lambda x: None if x is None else x.to_dict()  # noqa: E731
    return {
        "schema_version": JSON_SCHEMA_VERSION, "template": r.template, "shape": shape_str(r.shape), "dtype": r.dtype,
        "device": r.device.id, "device_name": r.device.name, "device_key": r.device.fingerprint.key,
        "strategy": r.strategy, "space_size": r.space_size, "trials": len(r.measured), "reused": r.reused,
        "elapsed_s": r.elapsed, "stop_reason": r.stop_reason, "failures": r.failures, "best": m(r.best), "default": m(r.default),
        "speedup_over_default": r.speedup, "db": r.db_path, "stop_rules": r.stop_rules,
        "new_configs": [dict(x.config) for x in r.measured], "confirmed": [m(x) for x in r.confirmed],
        "isolated": r.isolated, "replaced_workers": r.replaced_workers, "build_workers": r.build_workers,
        "storage": r.storage, "study": r.study,
    }


@click.command()
@click.argument("template")
@click.option("--shape", default=None, help="Problem shape, e.g. 1024x1024x1024 (MxNxK for matmul); default: the template's.")
@dtype_option
@device_option
@click.option("--trials", type=int, default=None, help="New configs to measure (default 50 when no --time-budget).")
@click.option("--time-budget", type=float, default=None, help="Stop after this many seconds.")
@click.option("--strategy", default=None, help="Search strategy: ensemble (default, measured best on recorded spaces), local, density, tpe, random or grid.")
@click.option("--seed", type=int, default=None, help="Seed of the strategy and the random inputs.")
@click.option("--strategy-option", "strategy_option", multiple=True, metavar="KEY=VALUE",
              help="A setting of the strategy, VALUE as JSON (e.g. polish=0.2, arms='[\"density\",\"local\"]'); repeatable. 'tunesvc strategies' lists each strategy's settings.")
@click.option("--patience", type=int, default=None, help="Stop after this many trials without an improvement of --min-improvement.")
@click.option("--min-improvement", type=float, default=0.01, show_default=True, help="Improvement that resets --patience, as a fraction (0.01 = 1%).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds a candidate may take to build, and again to run, before its worker is killed.")
@click.option("--isolation/--no-isolation", default=True, show_default=True, help="Run candidates in a worker process that a hang or crash cannot take down.")
@click.option("--build-workers", type=int, default=None, help="Processes compiling upcoming candidates meanwhile (default: 1 for a GPU, 0 for a CPU device).")
@click.option("--storage", default=None, help="Optuna storage URL of the problem's study, e.g. postgresql://user@host/db to share one search between machines, any strategy (default: an SQLite file beside --db).")
@db_option
@json_option
@library_errors
def tune(template, shape, dtype, device, trials, time_budget, strategy, seed, strategy_option, patience, min_improvement, timeout, isolation,
         build_workers, storage, db, as_json):
    """Tune TEMPLATE for one shape on one device and store every measurement (resumes where a stopped run left off)."""
    from ..tuning.options import RunOptions, SearchOptions, StopRules
    from ..tuning.tuner import resolve, tune_problem

    # Parse and check everything once, before any progress bar: a bad option or device is one line.
    stop = StopRules(trials, time_budget, patience, min_improvement)
    search_options = SearchOptions(strategy, seed, storage, strategy_options=strategy_option)
    run = RunOptions(timeout=timeout, isolate=isolation, build_workers=build_workers)
    target = resolve(template, shape, dtype, device)
    shown = not as_json and not quiet()
    label = f"tuning {target.problem.template} {shape_str(target.problem.shape)}"
    with Progress(label, stop.or_default().trials, "trials", shown, budget=stop.time_budget) as bar:
        def progress(ev):
            best = f"best {ev.best.gflops:.1f} GFLOP/s" if ev.best and ev.best.gflops is not None else "no valid config yet"
            bar.update(ev.index, best)

        try:
            result = tune_problem(target, db=db, stop=stop, search_options=search_options, run=run, on_trial=progress)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: every config measured so far is stored; run the same command again to resume", err=True)
            sys.exit(130)
    if as_json:
        emit_json(dict(result_to_dict(result), status="ok" if result.ok else "failed",
                       error=None if result.ok else result.failure()))
    else:
        click.echo(clean_lines(summary(result)))
    if not result.ok:
        raise click.ClickException(clean(result.failure()))


def clean_lines(text: str) -> str:
    """A report of several lines, each cleaned for the terminal (stored reasons are any text)."""
    return "\n".join(clean(line) for line in text.split("\n"))


def summary(r) -> str:
    lines = [f"tuned {r.template} {shape_str(r.shape)} {r.dtype} on {r.device.id} ({r.device.name})",
             f"  {len(r.measured)} new trials, {r.reused} reused from the database, {r.space_size} valid configs; "
             f"stopped: {r.stop_reason}; {r.elapsed:.1f} s"]
    if getattr(r, "stop_rules", ""):
        lines.append(f"  stopping rules: {r.stop_rules}")
    if r.failures:
        lines.append("  failed: " + ", ".join(f"{k} {v}" for k, v in sorted(r.failures.items())))
    if not r.ok:
        lines.append(f"  {r.failure()}")
        return "\n".join(lines)
    b = r.best
    lines.append("  best: " + " ".join(f"{k}={v}" for k, v in b.config.items()))
    lines.append(f"  time {fmt_time(b.time)} (min {fmt_time(b.timing.min)}, max {fmt_time(b.timing.max)}); "
                 f"{b.gflops:.2f} GFLOP/s; {b.gbps:.2f} GB/s")
    if r.speedup is not None:
        lines.append(f"  speedup over the default config: {r.speedup:.2f}x ({r.default.gflops:.2f} GFLOP/s)")
    if roof := roofline_line(r):
        lines.append(roof)
    lines.append(f"  stored in {r.db_path}")
    if getattr(r, "storage", ""):
        lines.append(f"  Optuna study in {r.storage} ('tunesvc dashboard' opens it)")
    return "\n".join(lines)


@click.command("tune-all")
@device_option
@click.option("--preset", default="small", show_default=True,
              help="Shapes to tune: small (a quick run), full (common transformer layers, for a release) or llm "
                   "(Llama-3.1-8B and 3.2-1B decode and prefill: quantized GEMV and grouped-query attention).")
@click.option("--time-budget", type=float, default=None, help="Stop after this many seconds in all (run again to resume).")
@click.option("--template", "only", multiple=True, help="Only this template (repeatable); default: every built-in one.")
@click.option("--trials", type=int, default=None, help="Configs to measure per problem (default: the preset's).")
@click.option("--strategy", default=None, help="Search strategy for every problem (default: ensemble); 'tunesvc strategies' lists them.")
@click.option("--strategy-option", "strategy_option", multiple=True, metavar="KEY=VALUE",
              help="A setting of the strategy, VALUE as JSON, for every problem; repeatable.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Export file written at the end (default: tunesvc-<backend>-<device>-<preset>.jsonl.gz).")
@db_option
@json_option
@library_errors
def tune_all_cmd(device, preset, time_budget, only, trials, strategy, strategy_option, out, db, as_json):
    """Tune every built-in template over a preset of common shapes on one device; export the results."""
    from ..tuning.presets import tune_all

    from ..tuning.options import from_keywords

    search = {"strategy": strategy} if strategy else {}
    if strategy_option:
        search["strategy_options"] = strategy_option
    from_keywords(**search)  # refused in one line before the progress bar opens
    with Progress(f"tune-all {preset}", None, "problems", not as_json and not quiet()) as bar:
        def progress(p):
            best = f" {p.best_gflops:.1f} GFLOP/s" if p.best_gflops is not None else ""
            bar.update(p.problems_done, f"{p.problem}: trial {p.trials_done}{best}", total=p.problems)

        r = tune_all(device, preset, time_budget, db, out, list(only) or None, on_progress=progress, trials=trials,
                     **search)
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "device": r.device.id, "device_name": r.device.name,
                   "preset": r.preset, "elapsed_s": r.elapsed,
                   "stopped": r.stopped, "export": {"path": r.export.path, "records": r.export.records},
                   "problems": [{"problem": str(o.problem), "status": o.status, "new_trials": o.new_trials,
                                 "best_time_s": o.best_time, "best_gflops": o.best_gflops, "reason": o.reason}
                                for o in r.outcomes], "failed": len(r.failed), "status": "failed" if r.failed else "ok"})
    else:
        click.echo(clean_lines(tune_all_report(r)))
    if r.failed:
        raise click.ClickException(clean(f"{len(r.failed)} of {len(r.outcomes)} problems failed: no config ran correctly "
                                   f"(first: {r.failed[0].problem}: {r.failed[0].reason})"))


def tune_all_report(r) -> str:
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


def roofline_line(result) -> str | None:
    """'roofline: ...' for a tune result's best config, when the device's ceilings are stored."""
    from .. import templates
    from ..measure.roofline import describe, fraction

    if result.best is None or not result.best.ok:
        return None
    c = ceilings_in(result.db_path, result.device.fingerprint.key)
    f = fraction(templates.get(result.template), result.shape, result.best.gflops, result.best.gbps, c)
    return f"  roofline: {describe(f[0], f[1], c)}" if f else None
