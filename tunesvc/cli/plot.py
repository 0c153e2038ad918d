"""``tunesvc plot``: pictures of the search and its results (PNG or SVG; the plot extra)."""

from __future__ import annotations

import click

from .common import CliUsageError, db_option, device_filter_option, dtype_option, library_errors

output_option = click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
                             help="File to write: .png or .svg.")


@click.group()
def plot():
    """Draw the convergence of a search, a device's roofline, or one problem across devices."""


def _open(db):
    from ..cache import Store

    return Store(db, readonly=True)


def _one_device(records, what: str) -> str:
    """The one device key the records are of; a UsageError naming them when there are several."""
    keys = sorted({r.fingerprint.key for r in records})
    if len(keys) > 1:
        listed = "; ".join(keys[:5])
        raise CliUsageError(f"{what} was tuned on {len(keys)} devices: pass --device with one of: {listed}")
    return keys[0] if keys else ""


def _study_trials(problem, db):
    """The search's own record where tune left its Optuna study beside the database: trials in
    the order the strategy asked for them, each with the time it had then (``first_time_s`` of a
    leader measured again) and the moment it finished; None where there is no study."""
    from ..errors import MissingDependencyError, UsageError, require
    from ..report.plots import Trial
    from ..tuning.study import find_study

    try:
        url, name, _ = find_study(problem, db)
    except (UsageError, MissingDependencyError):
        return None
    optuna = require("optuna")
    out = []
    for t in optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False):
        stamp = t.datetime_complete or t.datetime_start
        if stamp is None or t.state.name not in ("COMPLETE", "FAIL", "PRUNED"):
            continue  # asked for and never measured (a run cut short)
        first = t.user_attrs.get("first_time_s", t.value)
        out.append(Trial(float(first) if t.state.name == "COMPLETE" and first is not None else None, stamp.isoformat()))
    return out or None


@plot.command()
@click.argument("template")
@click.option("--shape", required=True, help="Problem shape, e.g. 1024x1024x1024.")
@dtype_option
@device_filter_option
@db_option
@output_option
@library_errors
def convergence(template, shape, dtype, device, db, output):
    """Best time so far against trials and wall time for one tuned problem (random search's
    expectation beside it where the whole space was measured)."""
    from .. import templates
    from ..report import plots
    from ..search import SearchSpace
    from ..templates.base import Context
    from ..types import Problem, shape_str

    tpl = templates.get(template)
    shape = tpl.parse_shape(shape)
    plots.check_output(output)
    store = _open(db)
    try:
        candidates = [r for r in store.records(tpl.name, device) if r.shape == shape and r.dtype == dtype
                      and r.template_hash == tpl.source_hash]
        key = _one_device(candidates, f"{tpl.name} {shape_str(shape)} {dtype}")
        fp = next((r.fingerprint for r in candidates if r.fingerprint.key == key), None)
        history = store.history(Problem(tpl.name, tpl.source_hash, shape, dtype, fp)) if fp else []
        info = store.device(key) if key else None
    finally:
        store.close()
    size = len(SearchSpace.from_template(tpl, Context(shape, dtype, info))) if info else None
    trials = _study_trials(Problem(tpl.name, tpl.source_hash, shape, dtype, fp), db) if fp else None
    if trials is None:  # records imported, or tuned before studies were kept: the database's order
        trials = [plots.Trial(r.measurement.time if r.measurement.ok else None, r.created_at) for r in history]
    title = f"{tpl.name} {shape_str(shape)} {dtype} on {fp.name if fp else '?'} [{fp.driver if fp else ''}]"
    click.echo(f"wrote {plots.convergence(trials, output, title, size)}")


@plot.command()
@device_filter_option
@db_option
@output_option
@library_errors
def roofline(device, db, output):
    """Each tuned problem of a device as a point under its measured ceilings ('tunesvc devices --probe')."""
    from .. import templates
    from ..errors import UsageError
    from ..measure import roofline as ceilings_of
    from ..report import plots
    from ..types import shape_str

    plots.check_output(output)
    store = _open(db)
    try:
        best: dict = {}
        for r in store.records(None, device, "ok"):
            k = (r.fingerprint.key, r.template, r.dtype, r.shape)
            if k not in best or r.measurement.time < best[k].measurement.time:
                best[k] = r
        key = _one_device(best.values(), "the selection")
        ceilings = ceilings_of.stored(store, key) if key else None
    finally:
        store.close()
    if ceilings is None:
        raise UsageError("no roofline ceilings are stored for this device: run 'tunesvc devices --probe' first")
    points = []
    for (_, name, dtype, shape), r in sorted(best.items()):
        try:
            tpl = templates.get(name)
        except UsageError:  # a template not known in this process: its intensity is unknown
            continue
        moved = tpl.bytes_moved(shape, dtype)
        if moved and r.measurement.gflops:
            points.append(plots.Point(f"{name} {shape_str(shape)}", tpl.flops(shape) / moved, r.measurement.gflops))
    some = next(iter(best.values()))
    title = f"roofline of {some.fingerprint.name} [{some.fingerprint.driver}]"
    click.echo(f"wrote {plots.roofline(points, ceilings, output, title)}")


@plot.command()
@click.argument("template")
@click.option("--shape", required=True, help="Problem shape, e.g. 1024x1024x1024.")
@dtype_option
@db_option
@output_option
@library_errors
def compare(template, shape, dtype, db, output):
    """One problem's best config and GFLOP/s on every device and driver that tuned it."""
    from .. import templates
    from ..report import plots
    from ..types import shape_str

    tpl = templates.get(template)
    shape = tpl.parse_shape(shape)
    plots.check_output(output)
    store = _open(db)
    try:
        best: dict = {}
        for r in store.records(tpl.name, None, "ok"):
            if r.shape == shape and r.dtype == dtype and r.template_hash == tpl.source_hash:
                k = r.fingerprint.key
                if k not in best or r.measurement.time < best[k].measurement.time:
                    best[k] = r
    finally:
        store.close()
    bars = [plots.Bar(f"{r.fingerprint.name} [{r.fingerprint.driver}]", r.measurement.gflops or 0.0,
                      " ".join(f"{k}={v}" for k, v in r.measurement.config.items()))
            for r in sorted(best.values(), key=lambda r: -(r.measurement.gflops or 0.0))]
    title = f"{tpl.name} {shape_str(shape)} {dtype}: best config per device and driver"
    click.echo(f"wrote {plots.compare(bars, output, title)}")
