"""The tunesvc command line. Each command parses, calls one library function, prints.

One module per command group, each command a plain ``click.command`` registered here and
nowhere else. Library errors that come from user input become exit code 2 with one line
that says what is wrong and how to fix it (``common.library_errors``).
"""

from __future__ import annotations

import click

from .._version import __version__
from .common import set_verbosity
from .devices import devices
from .exchange import export_cmd, import_cmd
from .jobs import jobs, submit, worker
from .lookup import lookup
from .plot import plot
from .replay import replay
from .serve import serve
from .show import show
from .tune import tune, tune_all_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunesvc")
@click.option("-v", "--verbose", count=True, help="Log what happens on stderr (-vv: every trial, and Optuna's logs).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display: only results and errors.")
def main(verbose, quiet):
    """tunesvc: tune GPU and CPU kernels per device, keep every measurement, look the best config up."""
    set_verbosity(-1 if quiet else verbose)


for _command in (devices, tune, tune_all_cmd, lookup, show, export_cmd, import_cmd, replay, serve, plot, submit, worker, jobs):
    main.add_command(_command)
