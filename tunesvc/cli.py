"""The tunesvc command line. Each command parses, calls one library function, prints.

Library errors that come from user input become exit code 2 with one line
that says what is wrong and how to fix it.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from . import __version__
from .errors import MissingDependencyError, StoreError, TunesvcError, UsageError
from .types import shape_str


class CliUsageError(click.UsageError):
    """A usage error printed as one line, without click's 'Try --help' footer."""

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True)


def library_errors(fn):
    """Turn library errors into exit code 2 (usage) or 1 (anything else) with one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UsageError, StoreError) as e:
            raise CliUsageError(str(e)) from None
        except (MissingDependencyError, TunesvcError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


db_option = click.option("--db", type=click.Path(dir_okay=False), default=None, envvar="TUNESVC_DB",
                         help="Tuning database file (default: $TUNESVC_DB or ~/.cache/tunesvc/tunesvc.db).")
device_option = click.option("--device", default=None, help="Device id (opencl:0:0), fingerprint or name substring; default: first GPU, else first CPU.")
dtype_option = click.option("--dtype", default="float32", show_default=True, help="Element type: float32 or float16.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunesvc")
def main():
    """tunesvc: tune GPU and CPU kernels per device, keep every measurement, look the best config up."""


# ---- devices ------------------------------------------------------------------------------
@main.command()
@click.option("--probe", is_flag=True, help="Measure each usable device's roofline ceilings (copy and read bandwidth, FMA throughput) and store them.")
@click.option("--recheck", is_flag=True, help="Check again whether each device can build a trivial kernel (verdicts are remembered per driver).")
@db_option
@json_option
@library_errors
def devices(probe, recheck, db, as_json):
    """List every OpenCL (and CUDA) device with its id, properties and stored roofline ceilings;
    devices whose driver cannot build a kernel are listed apart, with the reason and the fix."""
    from . import roofline
    from .devices import default_device, discover

    found = discover(refresh=recheck)
    default = default_device(list(found.devices)).id if found.devices else None
    ceilings = _device_ceilings(found.devices, probe, db)
    if as_json:
        emit_json({"devices": [dict(d.to_dict(), default=d.id == default, usable=True, ceilings=_ceilings_dict(ceilings[d.id]))
                               for d in found.devices],
                   "unusable": [dict(d.to_dict(), usable=False, reason=why) for d, why in found.unusable],
                   "unavailable": found.unavailable})
        return
    for d in found.devices:
        mark = "  (default)" if d.id == default else ""
        click.echo(f"{d.id}  {d.name}  [{d.fingerprint.driver}]{mark}")
        click.echo(f"    hardware: vendor {d.vendor}; type {d.device_type}; architecture {d.fingerprint.architecture or '?'}")
        click.echo(f"    driver: platform {d.platform}; version {d.fingerprint.driver}; {d.version}; {d.c_version}")
        click.echo(f"    compute units {d.compute_units}; max work-group {d.max_work_group_size}; "
                   f"local memory {d.local_mem_size // 1024} KiB ({d.local_mem_type}); preferred float vector width {d.preferred_vector_width_float}")
        click.echo(f"    fp16 {'yes' if d.fp16 else 'no'}; fp64 {'yes' if d.fp64 else 'no'}; global memory {d.global_mem_size / 2**30:.1f} GiB")
        click.echo(f"    {roofline.ceilings_line(ceilings[d.id])}")
    for d, why in found.unusable:
        click.echo(f"{d.id}  {d.name}  [{d.fingerprint.driver}]  (unusable)")
        click.echo(f"    platform {d.platform}; {d.version}")
        click.echo(f"    cannot build a trivial kernel: {why}")
    for backend, why in found.unavailable.items():
        click.echo(f"{backend}: {why}")
    if not found.devices:
        from .devices.drivers import INSTALL_HINT

        raise click.ClickException(f"no usable device; {INSTALL_HINT}")


def _device_ceilings(infos, probe: bool, db) -> dict:
    """Device id -> Ceilings: measured now and stored with --probe, else as stored (or None)."""
    from . import roofline

    if not probe:
        return {d.id: roofline.ceilings_in(db, d.fingerprint.key) for d in infos}
    from .cache import Store
    from .devices import open_device

    store = Store(db)
    out = {}
    for d in infos:
        click.echo(f"probing {d.id} ({d.name}) ...", err=True)
        out[d.id] = roofline.measure_and_store(store, open_device(d))
    return out


def _ceilings_dict(c) -> dict | None:
    return None if c is None else {"gbps": c.gbps, "gflops": c.gflops, "measured_at": c.measured_at, "details": dict(c.details or {})}


# ---- tune ---------------------------------------------------------------------------------
def _fmt_time(t: float | None) -> str:
    if t is None or t == float("inf"):
        return "-"
    return f"{t * 1e3:.3f} ms" if t >= 1e-3 else f"{t * 1e6:.1f} us"


def result_to_dict(r) -> dict:
    m = lambda x: None if x is None else {  # noqa: E731
        "config": dict(x.config), "status": x.status, "reason": x.reason, "time": x.timing.median if x.timing else None,
        "time_min": x.timing.min if x.timing else None, "time_max": x.timing.max if x.timing else None, "gflops": x.gflops, "gbps": x.gbps}
    return {
        "template": r.template, "shape": shape_str(r.shape), "dtype": r.dtype, "device": r.device.id, "device_name": r.device.name,
        "strategy": r.strategy, "space_size": r.space_size, "trials": len(r.measured), "reused": r.reused,
        "elapsed": r.elapsed, "stop_reason": r.stop_reason, "failures": r.failures, "best": m(r.best), "default": m(r.default),
        "speedup_over_default": r.speedup, "db": r.db_path,
        "stop_rules": getattr(r, "stop_rules", ""), "new_configs": [dict(x.config) for x in r.measured],
        "confirmed": [m(x) for x in getattr(r, "confirmed", ())], "isolated": getattr(r, "isolated", False),
        "replaced_workers": getattr(r, "replaced_workers", 0), "storage": getattr(r, "storage", ""), "study": getattr(r, "study", ""),
    }


@main.command()
@click.argument("template")
@click.option("--shape", default=None, help="Problem shape, e.g. 1024x1024x1024 (MxNxK for matmul); default: the template's.")
@dtype_option
@device_option
@click.option("--trials", type=int, default=None, help="New configs to measure (default 50 when no --time-budget).")
@click.option("--time-budget", type=float, default=None, help="Stop after this many seconds.")
@click.option("--strategy", default=None, help="Search strategy: ensemble (default, measured best on recorded spaces), local, density, tpe, random or grid.")
@click.option("--seed", type=int, default=None, help="Seed of the strategy and the random inputs.")
@click.option("--patience", type=int, default=None, help="Stop after this many trials without an improvement of --min-improvement.")
@click.option("--min-improvement", type=float, default=0.01, show_default=True, help="Improvement that resets --patience, as a fraction (0.01 = 1%).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds a candidate may take to build, and again to run, before its worker is killed.")
@click.option("--isolation/--no-isolation", default=True, show_default=True, help="Run candidates in a worker process that a hang or crash cannot take down.")
@click.option("--build-workers", type=int, default=None, help="Processes compiling upcoming candidates meanwhile (default: 1 for a GPU, 0 for a CPU device).")
@click.option("--storage", default=None, help="Optuna storage URL of the search state, e.g. postgresql://user@host/db to share one search between machines (default: an SQLite file beside --db).")
@db_option
@json_option
@library_errors
def tune(template, shape, dtype, device, trials, time_budget, strategy, seed, patience, min_improvement, timeout, isolation,
         build_workers, storage, db, as_json):
    """Tune TEMPLATE for one shape on one device and store every measurement (resumes where a stopped run left off)."""
    from . import search, templates
    from .tuner import check_options, tune as run_tune

    tpl = templates.get(template)
    shape = tpl.parse_shape(shape) if shape else tpl.default_shape
    check_options(trials, time_budget, patience, min_improvement, timeout, build_workers)
    from .devices import select_device

    select_device(device)  # an unknown or unusable device: one line before any progress bar
    total = trials if trials is not None else (None if time_budget or patience else 50)
    bar_ctx = click.progressbar(length=total or 0, label=f"tuning {tpl.name} {shape_str(shape)}", file=sys.stderr,
                                show_eta=False, show_pos=True, item_show_func=lambda s: s) if not as_json else None
    state = {"done": 0}

    def progress(ev):
        if bar_ctx is None:
            return
        best = f"best {ev.best.gflops:.1f} GFLOP/s" if ev.best and ev.best.gflops is not None else "no valid config yet"
        if total:
            bar_ctx.update(ev.index - state["done"], best)
        else:
            click.echo(f"  trial {ev.index}: {best}", err=True)
        state["done"] = ev.index

    opts = dict(patience=patience, min_improvement=min_improvement, timeout=timeout, isolate=isolation,
                build_workers=build_workers, storage=storage)
    strategy = strategy or ("tpe" if storage else None)  # a shared --storage holds an Optuna study
    try:
        if bar_ctx is not None:
            with bar_ctx:
                result = run_tune(tpl, shape, dtype, device, db, strategy or search.DEFAULT_STRATEGY, trials, time_budget, seed, on_trial=progress, **opts)
        else:
            result = run_tune(tpl, shape, dtype, device, db, strategy or search.DEFAULT_STRATEGY, trials, time_budget, seed, **opts)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: every config measured so far is stored; run the same command again to resume", err=True)
        sys.exit(130)
    if as_json:
        emit_json(dict(result_to_dict(result), status="ok" if result.ok else "failed",
                       error=None if result.ok else result.failure()))
    else:
        click.echo(summary(result))
    if not result.ok:
        raise click.ClickException(result.failure())


def summary(r) -> str:
    lines = [f"tuned {r.template} {shape_str(r.shape)} {r.dtype} on {r.device.id} ({r.device.name})",
             f"  {len(r.measured)} new trials, {r.reused} reused from the database, {r.space_size} valid configs; "
             f"stopped: {r.stop_reason}; {r.elapsed:.1f} s"]
    if getattr(r, "stop_rules", ""):
        lines.append(f"  stopping rules: {r.stop_rules}")
    if r.failures:
        lines.append("  failed: " + ", ".join(f"{k} {v}" for k, v in sorted(r.failures.items())))
    if not r.ok:
        lines.append(f"  {r.failure()}")
        return "\n".join(lines)
    b = r.best
    lines.append("  best: " + " ".join(f"{k}={v}" for k, v in b.config.items()))
    lines.append(f"  time {_fmt_time(b.time)} (min {_fmt_time(b.timing.min)}, max {_fmt_time(b.timing.max)}); "
                 f"{b.gflops:.2f} GFLOP/s; {b.gbps:.2f} GB/s")
    if r.speedup is not None:
        lines.append(f"  speedup over the default config: {r.speedup:.2f}x ({r.default.gflops:.2f} GFLOP/s)")
    from .roofline import summary_line

    if roof := summary_line(r):
        lines.append(roof)
    lines.append(f"  stored in {r.db_path}")
    return "\n".join(lines)


# ---- lookup -------------------------------------------------------------------------------
@main.command()
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
    from . import templates
    from .lookup import lookup as do_lookup

    tpl = templates.get(template)
    res = do_lookup(tpl.name, tpl.parse_shape(shape), dtype, device, db)
    if as_json:
        emit_json({"template": res.template, "shape": shape_str(res.shape), "dtype": res.dtype, "level": res.level,
                   "params": res.params, "time": res.time, "gflops": res.gflops,
                   "tuned_shape": shape_str(res.tuned_shape) if res.tuned_shape else None,
                   "device_key": res.device_key, "explain": list(res.explain)})
        return
    click.echo(f"{res.template} {shape_str(res.shape)} {res.dtype}: {res.level}"
               + (f" (tuned at {shape_str(res.tuned_shape)})" if res.tuned_shape and res.tuned_shape != res.shape else ""))
    click.echo("  " + " ".join(f"{k}={v}" for k, v in res.params.items()))
    if res.time is not None:
        click.echo(f"  time {_fmt_time(res.time)}; {res.gflops:.2f} GFLOP/s")
    if explain:
        for line in res.explain:
            click.echo(f"  - {line}")


# ---- show ---------------------------------------------------------------------------------
def _is_stale(record, hashes: dict) -> bool:
    """Whether a record is of an older template source than the one installed (never served by lookup)."""
    from . import templates

    if record.template not in hashes:
        try:
            hashes[record.template] = templates.get(record.template).source_hash
        except UsageError:  # a user template that is not loaded: cannot tell
            hashes[record.template] = record.template_hash
    return hashes[record.template] != record.template_hash


@main.command()
@db_option
@click.option("--template", default=None, help="Only this template.")
@device_option
@click.option("--status", default=None, help="Only records of this status (ok, build, launch, wrong_result, ...).")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many rows (0: all).")
@json_option
@library_errors
def show(db, template, device, status, limit, as_json):
    """A table of stored measurements, fastest first per problem."""
    from . import roofline
    from .cache import Store

    store = Store(db, readonly=True)
    records = store.records(template, device, status)
    rows = []
    hashes: dict = {}
    ceilings: dict = {}
    for r in records:
        m = r.measurement
        stale = _is_stale(r, hashes)
        roof = _roofline_cell(store, r, ceilings)
        rows.append({"template": r.template, "device": r.fingerprint.name, "dtype": r.dtype, "shape": shape_str(r.shape),
                     "status": m.status + (" (stale)" if stale else ""), "stale": stale, "time": _fmt_time(m.time) if m.ok else "-",
                     "gflops": f"{m.gflops:.2f}" if m.gflops is not None else "-",
                     "config": " ".join(f"{k}={v}" for k, v in m.config.items()),
                     "reason": m.reason, "source": r.source, "created_at": r.created_at,
                     "time_s": m.time if m.ok else None, "roofline": f"{roof[1]:.0%} {roofline.label(roof[0])}" if roof else "-",
                     "roofline_fraction": roof[1] if roof else None})
        if limit and len(rows) >= limit:
            break
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no records match")
        return
    click.echo(table(rows, ["template", "device", "dtype", "shape", "status", "time", "gflops", "roofline", "config", "reason"]))


def _roofline_cell(store, record, cache: dict):
    """(bound, fraction of the device's ceiling) of a record, ceilings read once per device."""
    from . import roofline

    key = record.fingerprint.key
    if key not in cache:
        cache[key] = roofline.stored(store, key)
    return roofline.record_fraction(record, cache[key])


# ---- commands of other modules ------------------------------------------------------------
# Each capability keeps its commands in its own module; register them here, one line each.
from .cli_replay import replay as _replay_cmd  # noqa: E402,F401  (registers itself on main)
from .cli_exchange import export_cmd, import_cmd, tune_all_cmd  # noqa: E402
main.add_command(export_cmd)
main.add_command(import_cmd)
main.add_command(tune_all_cmd)
