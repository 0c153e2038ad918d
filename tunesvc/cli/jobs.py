"""``tunesvc submit``, ``tunesvc worker``, ``tunesvc jobs``: tuning jobs queued in the database
and run by the workers whose device can serve them."""

from __future__ import annotations

import dataclasses

import click

from ..errors import UsageError
from .common import (CliUsageError, check_count, clean, db_option, device_option, dtype_option, emit_json, json_option,
                     library_errors, one_line, table, JSON_SCHEMA_VERSION)


@click.command()
@click.argument("template", required=False)
@click.option("--shape", default=None, help="Problem shape, e.g. 1024x1024x1024; default: the template's.")
@dtype_option
@click.option("--device-family", default="", help="Only workers whose device matches: a name (a100), architecture, vendor or type (gpu).")
@click.option("--from-demand", is_flag=True,
              help="Instead of TEMPLATE: queue the problems lookups asked for most and nobody tuned (see 'tunesvc demand').")
@click.option("--top", type=int, default=None, help="With --from-demand: how many problems, most asked first (default 10).")
@click.option("--trials", type=int, default=None, help="Configs to measure (default: the worker's).")
@click.option("--time-budget", type=float, default=None, help="Seconds to spend (default: the worker's).")
@db_option
@json_option
@library_errors
def submit(template, shape, dtype, device_family, from_demand, top, trials, time_budget, db, as_json):
    """Queue a tuning job for TEMPLATE at a shape; a worker on a matching device runs it.

    With --from-demand, one job per problem of the demand instead, each for the device that asked
    (its fingerprint key as the device family, unless --device-family says otherwise)."""
    from ..tuning.fleet import submit as queue_job

    if from_demand:
        return _submit_demand(click.get_current_context(), template, shape, device_family, top, trials, time_budget, db, as_json)
    if top is not None:
        raise CliUsageError("--top needs --from-demand")
    if template is None:
        raise CliUsageError("missing argument TEMPLATE (or --from-demand to queue what lookups asked for)")
    job_id = queue_job(template, shape, dtype, device_family, db, trials, time_budget)
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "job": job_id})
    else:
        click.echo(f"job {job_id} queued")


def _submit_demand(ctx, template, shape, device_family, top, trials, time_budget, db, as_json):
    """One job per problem of the demand, most asked first; a problem that cannot be queued any more
    (its template is gone) is skipped with a line on stderr."""
    from ..cache.demand import listing
    from ..tuning.fleet import submit as queue_job
    from ..tuning.options import StopRules

    given = [f for f, v in (("TEMPLATE", template), ("--shape", shape)) if v is not None]
    if ctx.get_parameter_source("dtype") == click.core.ParameterSource.COMMANDLINE:
        given.append("--dtype")
    if given:
        verb = "comes" if len(given) == 1 else "come"
        raise CliUsageError(f"{' and '.join(given)} {verb} from the demand with --from-demand: leave {'it' if len(given) == 1 else 'them'} out")
    top = 10 if top is None else top
    check_count(top, "--top", 1, 10_000)
    StopRules(trials=trials, time_budget=time_budget)  # bad budgets are said before anything is queued
    queued, skipped = [], []
    for d in listing(db, limit=top):
        family = device_family or d.device_key
        try:
            job_id = queue_job(d.template, d.shape, d.dtype, family, db, trials, time_budget)
        except UsageError as e:  # the template is gone, or no longer takes that shape or dtype
            skipped.append({"template": d.template, "shape": d.shape, "dtype": d.dtype, "reason": str(e)})
            click.echo(f"skipped {clean(d.template)} {clean(d.shape)} {d.dtype}: {one_line(e)}", err=True)
            continue
        queued.append({"job": job_id, "template": d.template, "shape": d.shape, "dtype": d.dtype,
                       "device_family": family, "asked": d.count})
        if not as_json:
            click.echo(f"job {job_id} queued: {clean(d.template)} {clean(d.shape)} {d.dtype} on {clean(d.device_name)} "
                       f"(asked {d.count} time{'s' if d.count != 1 else ''})")
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "jobs": queued, "skipped": skipped})
    elif not queued and not skipped:
        click.echo("no demand to queue: every problem lookups asked for is tuned (or none was asked)")


@click.command()
@click.option("--limit", type=int, default=20, show_default=True, help="At most this many problems.")
@click.option("--all", "include_tuned", is_flag=True, help="Also the problems tuned since they were asked for.")
@db_option
@json_option
@library_errors
def demand(limit, include_tuned, db, as_json):
    """What lookups asked for and the database could not answer exactly, most asked first: only
    problems never tuned on the device that asked (queue them with 'tunesvc submit --from-demand')."""
    from ..cache.demand import listing

    check_count(limit, "--limit", 1, 1_000_000)
    listed = listing(db, limit=limit, include_tuned=include_tuned)
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION,
                   "demand": [dict(dataclasses.asdict(d), device_name=d.device_name) for d in listed]})
        return
    if not listed:
        click.echo("no demand recorded" + ("" if include_tuned else " that is not tuned yet"))
        return
    rows = [{"asked": str(d.count), "template": d.template, "shape": d.shape, "dtype": d.dtype, "device": d.device_name,
             "first seen": d.first_seen, "last seen": d.last_seen, **({"tuned": "yes" if d.tuned else "no"} if include_tuned else {})}
            for d in listed]
    click.echo(table(rows, ["asked", "template", "shape", "dtype", "device", "first seen", "last seen"]
                     + (["tuned"] if include_tuned else [])))


@click.command()
@device_option
@db_option
@click.option("--trials", type=int, default=None, help="Configs to measure per job without a budget of its own (default 50).")
@click.option("--time-budget", type=float, default=None, help="Seconds per job without a budget of its own.")
@click.option("--lease", type=float, default=60.0, show_default=True,
              help="Seconds a claimed job stays this worker's without a renewal (renewed every third of it).")
@click.option("--exit-when-idle", is_flag=True, help="Exit once no job this device can serve is left.")
@click.option("--strategy", default=None, help="Search strategy for every job (default: ensemble); 'tunesvc strategies' lists them.")
@click.option("--strategy-option", "strategy_option", multiple=True, metavar="KEY=VALUE",
              help="A setting of the strategy, VALUE as JSON, for every job; repeatable.")
@library_errors
def worker(device, db, trials, time_budget, lease, exit_when_idle, strategy, strategy_option):
    """Claim and tune the queued jobs this device can serve, one at a time; SIGTERM finishes the
    trial in flight, hands the job back and exits 0."""
    import threading

    from ..tuning.fleet import stop_on_signals, work

    stop = threading.Event()
    stop_on_signals(stop)
    limits = {k: v for k, v in (("trials", trials), ("time_budget", time_budget), ("strategy", strategy),
                                ("strategy_options", strategy_option or None)) if v is not None}
    s = work(device, db, lease, exit_when_idle, stop=stop,
             on_job=lambda job, state: click.echo(f"job {job.id} {job.template} {job.shape} {job.dtype}: {state}", err=True),
             **limits)
    click.echo(f"worker stopped ({s.stopped}): {len(s.done)} done, {len(s.failed)} failed, {len(s.released)} handed back")


@click.command()
@click.option("--state", type=click.Choice(["pending", "running", "done", "failed"]), default=None, help="Only jobs in this state.")
@db_option
@json_option
@library_errors
def jobs(state, db, as_json):
    """The job queue: pending, running (worker and progress), done, failed (with the reason)."""
    from ..cache.jobs import Queue

    queue = Queue.open(db)
    try:
        listed = queue.jobs(state)
    finally:
        queue.close()
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "jobs": [dataclasses.asdict(j) for j in listed]})
        return
    if not listed:
        click.echo("no jobs")
        return
    rows = [{"id": j.id, "problem": f"{j.template} {j.shape} {j.dtype}", "family": j.device_family or "any", "state": j.state,
             "worker": j.worker or "", "progress": j.progress, "reason": j.reason[:60]} for j in listed]
    click.echo(table(rows, ["id", "problem", "family", "state", "worker", "progress", "reason"]))
