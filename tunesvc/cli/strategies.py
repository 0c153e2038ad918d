"""``tunesvc strategies``: the search strategies and the settings each takes (``--strategy-option``)."""

from __future__ import annotations

import json

import click

from .common import emit_document, json_option, library_errors


def _shown(value) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


@click.command()
@click.argument("name", required=False)
@json_option
@library_errors
def strategies(name, as_json):
    """List the search strategies (or one, NAME) with each setting and its default."""
    from .. import search

    names = [search.check_name(name)] if name else list(search.STRATEGIES)
    found = {n: search.settings(n) for n in names}
    if as_json:
        emit_document(default=search.DEFAULT_STRATEGY, strategies=[
            {"name": n, "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()}}
            for n, s in found.items()])
        return
    for n, s in found.items():
        click.echo(n + ("  (default)" if n == search.DEFAULT_STRATEGY else ""))
        for k, v in s.items():
            click.echo(f"    {k}={_shown(v)}")
        if not s:
            click.echo("    (no settings)")
