"""``tunesvc show``: stored measurements as a table, fastest first per problem."""

from __future__ import annotations

import click

from .common import check_count, db_option, device_filter_option, emit_document, fmt_time, json_option, library_errors, table
from ..errors import UsageError
from ..types import shape_str

MAX_LIMIT = 10**9


def _is_stale(record, hashes: dict) -> bool:
    """Whether a record is of an older template source than the one installed (never served by lookup)."""
    from .. import templates

    if record.template not in hashes:
        try:
            hashes[record.template] = templates.get(record.template).source_hash
        except UsageError:  # a user template that is not loaded: cannot tell
            hashes[record.template] = record.template_hash
    return hashes[record.template] != record.template_hash


@click.command()
@db_option
@click.option("--template", default=None, help="Only this template.")
@device_filter_option
@click.option("--status", default=None, help="Only records of this status (ok, build, launch, wrong_result, ...).")
@click.option("--limit", type=int, default=50, show_default=True, help=f"At most this many rows (0: all; at most {MAX_LIMIT}).")
@json_option
@library_errors
def show(db, template, device, status, limit, as_json):
    """A table of stored measurements, fastest first per problem."""
    from ..measure import roofline
    from ..cache import Store

    check_count(limit, "--limit", 0, MAX_LIMIT)
    store = Store(db, readonly=True)
    records = store.records(template, device, status)
    rows, docs = [], []
    hashes: dict = {}
    ceilings: dict = {}
    for r in records:
        m = r.measurement
        stale = _is_stale(r, hashes)
        roof = _roofline_cell(store, r, ceilings)
        rows.append({"template": r.template, "device": r.fingerprint.name, "dtype": r.dtype, "shape": shape_str(r.shape),
                     "status": m.status + (" (stale)" if stale else ""), "time": fmt_time(m.time) if m.ok else "-",
                     "gflops": f"{m.gflops:.2f}" if m.gflops is not None else "-",
                     "config": " ".join(f"{k}={v}" for k, v in m.config.items()), "reason": m.reason,
                     "roofline": f"{roof[1]:.0%} {roofline.label(roof[0])}" if roof else "-"})
        if as_json:
            docs.append(record_document(r, stale, roof))
        if limit and len(rows) >= limit:
            break
    if as_json:
        emit_document(records=docs)
        return
    if not rows:
        click.echo("no records match")
        return
    click.echo(table(rows, ["template", "device", "dtype", "shape", "status", "time", "gflops", "roofline", "config", "reason"]))


def _roofline_cell(store, record, cache: dict):
    """(bound, fraction of the device's ceiling) of a record, ceilings read once per device."""
    from ..measure import roofline

    key = record.fingerprint.key
    if key not in cache:
        cache[key] = roofline.stored(store, key)
    return roofline.record_fraction(record, cache[key])


def record_document(record, stale: bool, roof) -> dict:
    """A stored record in show --json: the measurement's one JSON form (Measurement.to_dict: seconds in
    ``*_s``, rates as numbers) with what keys it and where it comes from."""
    fp = record.fingerprint
    return {"template": record.template, "template_hash": record.template_hash, "dtype": record.dtype,
            "shape": shape_str(record.shape), "device": fp.name, "device_key": fp.key, "device_type": fp.device_type,
            **record.measurement.to_dict(), "stale": stale, "source": record.source, "created_at": record.created_at,
            "roofline_bound": roof[0] if roof else None, "roofline_fraction": roof[1] if roof else None}
