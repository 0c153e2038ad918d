"""``tunesvc serve``: the HTTP API over a tuning database."""

from __future__ import annotations

import os

import click

from ..errors import UsageError, require
from .common import db_option, library_errors

ENV_TOKEN = "TUNESVC_TOKEN"


def read_token(token_file: str | None) -> str | None:
    """The write token: from ``--token-file``, else ``$TUNESVC_TOKEN``; never from the command line
    (where every user of the machine can read it in the process list)."""
    if token_file:
        try:
            token = open(token_file, encoding="utf-8").read().strip()
        except OSError as e:
            raise UsageError(f"cannot read --token-file {token_file!r}: {e.strerror or e}") from None
        if not token:
            raise UsageError(f"--token-file {token_file!r} is empty")
        return token
    return os.environ.get(ENV_TOKEN) or None


@click.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to bind.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the token that writes need (default: $TUNESVC_TOKEN; none: read-only).")
@library_errors
def serve(db, host, port, token_file):
    """Serve lookups, records and best configs as JSON over HTTP (OpenAPI at /openapi.json)."""
    require("uvicorn")
    import uvicorn

    from ..service.app import create_app

    token = read_token(token_file)
    app = create_app(db, token)
    click.echo(f"serving {'read-write' if token else 'read-only'} on http://{host}:{port} (OpenAPI at /openapi.json)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
