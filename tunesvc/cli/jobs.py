"""``tunesvc submit``, ``tunesvc worker``, ``tunesvc jobs``: tuning jobs queued in the database
and run by the workers whose device can serve them."""

from __future__ import annotations

import dataclasses

import click

from .common import db_option, device_option, dtype_option, emit_json, json_option, library_errors, table, JSON_SCHEMA_VERSION


@click.command()
@click.argument("template")
@click.option("--shape", default=None, help="Problem shape, e.g. 1024x1024x1024; default: the template's.")
@dtype_option
@click.option("--device-family", default="", help="Only workers whose device matches: a name (a100), architecture, vendor or type (gpu).")
@click.option("--trials", type=int, default=None, help="Configs to measure (default: the worker's).")
@click.option("--time-budget", type=float, default=None, help="Seconds to spend (default: the worker's).")
@db_option
@json_option
@library_errors
def submit(template, shape, dtype, device_family, trials, time_budget, db, as_json):
    """Queue a tuning job for TEMPLATE at a shape; a worker on a matching device runs it."""
    from ..tuning.fleet import submit as queue_job

    job_id = queue_job(template, shape, dtype, device_family, db, trials, time_budget)
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "job": job_id})
    else:
        click.echo(f"job {job_id} queued")


@click.command()
@device_option
@db_option
@click.option("--trials", type=int, default=None, help="Configs to measure per job without a budget of its own (default 50).")
@click.option("--time-budget", type=float, default=None, help="Seconds per job without a budget of its own.")
@click.option("--lease", type=float, default=60.0, show_default=True,
              help="Seconds a claimed job stays this worker's without a renewal (renewed every third of it).")
@click.option("--exit-when-idle", is_flag=True, help="Exit once no job this device can serve is left.")
@library_errors
def worker(device, db, trials, time_budget, lease, exit_when_idle):
    """Claim and tune the queued jobs this device can serve, one at a time; SIGTERM finishes the
    trial in flight, hands the job back and exits 0."""
    import threading

    from ..tuning.fleet import stop_on_signals, work

    stop = threading.Event()
    stop_on_signals(stop)
    limits = {k: v for k, v in (("trials", trials), ("time_budget", time_budget)) if v is not None}
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
