"""The tunesvc command line. Each command parses, calls one library function, prints.

One module per command group, each command a plain ``click.command`` registered here and
nowhere else. Library errors that come from user input become exit code 2 with one line
that says what is wrong and how to fix it (``common.library_errors``).
"""

from __future__ import annotations

import sys

import click

from .._version import __version__
from .common import CliUsageError, one_line, set_verbosity
from .dashboard import dashboard
from .devices import devices
from .exchange import export_cmd, import_cmd
from .jobs import demand, jobs, submit, worker
from .lookup import lookup
from .plot import plot
from .replay import replay
from .serve import serve
from .show import show
from .strategies import strategies
from .tune import tune, tune_all_cmd


class OneLineGroup(click.Group):
    """Click's own usage errors (an unknown option, a value of the wrong type, a missing argument)
    as one line and exit 2, like the library's: not click's three lines of usage text."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except CliUsageError as e:  # the library's: already one line, capped and cleaned
            e.show()
            sys.exit(2)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:  # a bare 'tunesvc': the help
                click.echo(e.ctx.get_help())
                sys.exit(0)
            where = e.ctx.command_path if e.ctx is not None else "tunesvc"
            click.echo(f"Error: {one_line(e.format_message())} (see '{where} --help')", err=True)
            sys.exit(2)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunesvc")
@click.option("-v", "--verbose", count=True, help="Log what happens on stderr (-vv: every trial, and Optuna's logs).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display: only results and errors.")
def main(verbose, quiet):
    """tunesvc: tune GPU and CPU kernels per device, keep every measurement, look the best config up."""
    set_verbosity(-1 if quiet else verbose)


for _command in (devices, tune, tune_all_cmd, lookup, show, export_cmd, import_cmd, replay, strategies, serve, plot, submit, worker, jobs, demand,
                 dashboard):
    main.add_command(_command)
