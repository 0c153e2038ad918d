"""``tunesvc dashboard``: optuna-dashboard on loopback, over the study of one tuning problem."""

from __future__ import annotations

import importlib.util

import click

from ..errors import MissingDependencyError
from .common import db_option, device_option, dtype_option, library_errors


@click.command()
@click.argument("template")
@click.option("--shape", default=None, help="Problem shape, as given to tune (default: the template's).")
@dtype_option
@device_option
@db_option
@click.option("--storage", default=None, help="Optuna storage URL the search used (default: the SQLite file beside --db).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port on 127.0.0.1.")
@library_errors
def dashboard(template, shape, dtype, device, db, storage, port):
    """Open the Optuna study of a tuned problem in optuna-dashboard, on 127.0.0.1 only (it has no login)."""
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise MissingDependencyError("tunesvc dashboard needs optuna-dashboard: pip install 'tunesvc[dashboard]'")
    from ..tuning.study import find_study, redact
    from ..tuning.tuner import resolve

    url, name, study_id = find_study(resolve(template, shape, dtype, device).problem, db, storage)
    import optuna_dashboard

    click.echo(f"study {name!r} of {redact(url)}\nhttp://127.0.0.1:{port}/dashboard/studies/{study_id} (Ctrl-C stops it)", err=True)
    optuna_dashboard.run_server(url, host="127.0.0.1", port=port)
