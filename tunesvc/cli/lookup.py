"""``tunesvc lookup``: the best known config for a problem; never measures."""

from __future__ import annotations

import click

from .common import clean, db_option, device_option, dtype_option, emit_document, fmt_time, json_option, library_errors
from ..types import shape_str


@click.command()
@click.argument("template")
@click.option("--shape", required=True, help="Problem shape, e.g. 1024x1024x1024.")
@dtype_option
@device_option
@db_option
@json_option
@click.option("--explain", is_flag=True, help="Say which level answered and why the ones above did not.")
@library_errors
def lookup(template, shape, dtype, device, db, as_json, explain):
    """Print the best known config for TEMPLATE at a shape (never measures anything)."""
    from ..cache.schema import cannot_open
    from ..lookup import database_problem, get_template, lookup as do_lookup
    from ..settings import db_path

    tpl = get_template(template)
    shape = tpl.parse_shape(shape)
    problem = database_problem(db)
    if problem:  # a fallback answer would pass for the database's: say it cannot be read instead
        raise cannot_open(db_path(db), problem)
    res = do_lookup(tpl.name, shape, dtype, device, db)
    if as_json:
        emit_document(template=res.template, shape=shape_str(res.shape), dtype=res.dtype, level=res.level,
                      params=res.params, time_s=res.time, gflops=res.gflops,
                      tuned_shape=shape_str(res.tuned_shape) if res.tuned_shape else None,
                      device_key=res.device_key, explain=list(res.explain))
        return
    click.echo(f"{res.template} {shape_str(res.shape)} {res.dtype}: {res.level}"
               + (f" (tuned at {shape_str(res.tuned_shape)})" if res.tuned_shape and res.tuned_shape != res.shape else ""))
    click.echo("  " + clean(" ".join(f"{k}={v}" for k, v in res.params.items())))
    if res.time is not None:
        click.echo(f"  time {fmt_time(res.time)}; {res.gflops:.2f} GFLOP/s")
    if explain:
        for line in res.explain:
            click.echo(f"  - {clean(line)}")
