"""``tunesvc devices``: every device, usable or not, with its roofline ceilings."""

from __future__ import annotations

import click

from .common import ceilings_in, clean, db_option, emit_document, json_option, library_errors



@click.command()
@click.option("--probe", is_flag=True, help="Measure each usable device's roofline ceilings (copy and read bandwidth, FMA throughput) and store them.")
@click.option("--recheck", is_flag=True, help="Check again whether each device can build a trivial kernel (verdicts are remembered per driver).")
@db_option
@json_option
@library_errors
def devices(probe, recheck, db, as_json):
    """List every OpenCL (and CUDA) device with its id, properties and stored roofline ceilings;
    devices whose driver cannot build a kernel are listed apart, with the reason and the fix."""
    from ..measure import roofline
    from ..devices import default_device, discover

    _check_db(db)
    found = discover(refresh=recheck)
    default = default_device(list(found.devices)).id if found.devices else None
    ceilings = _device_ceilings(found.devices, probe, db)
    if as_json:
        emit_document(devices=[dict(d.to_dict(), default=d.id == default, usable=True, ceilings=_ceilings_dict(ceilings[d.id]))
                               for d in found.devices],
                      unusable=[dict(d.to_dict(), usable=False, reason=why) for d, why in found.unusable],
                      unavailable=found.unavailable)
        return
    for d in found.devices:
        mark = "  (default)" if d.id == default else ""
        _say(f"{d.id}  {d.name}  [{d.fingerprint.driver}]{mark}")
        _say(f"    hardware: vendor {d.vendor}; type {d.device_type}; architecture {d.fingerprint.architecture or '?'}")
        _say(f"    driver: platform {d.platform}; version {d.fingerprint.driver}; {d.version}; {d.c_version}")
        _say(f"    compute units {d.compute_units}; max work-group {d.max_work_group_size}; "
                   f"local memory {d.local_mem_size // 1024} KiB ({d.local_mem_type}); preferred float vector width {d.preferred_vector_width_float}")
        _say(f"    fp16 {'yes' if d.fp16 else 'no'}; fp64 {'yes' if d.fp64 else 'no'}; global memory {d.global_mem_size / 2**30:.1f} GiB")
        _say(f"    {roofline.ceilings_line(ceilings[d.id])}")
    for d, why in found.unusable:
        _say(f"{d.id}  {d.name}  [{d.fingerprint.driver}]  (unusable)")
        _say(f"    platform {d.platform}; {d.version}")
        _say(f"    cannot build a trivial kernel: {why}")
    for backend, why in found.unavailable.items():
        _say(f"{backend}: {why}")
    if not found.devices:
        from ..devices.drivers import INSTALL_HINT

        raise click.ClickException(f"no usable device; {INSTALL_HINT}")


def _say(line: str) -> None:
    """One line of the listing: names and versions come from drivers (and their remembered verdicts)."""
    click.echo(clean(line))


def _check_db(db) -> None:
    """Refuse a --db file that is not a tuning database before any driver is asked (stored ceilings
    are read where they are found, and a missing file just has none)."""
    from ..cache import Store
    from ..settings import db_path

    if db_path(db).exists():
        Store(db, readonly=True).close()


def _device_ceilings(infos, probe: bool, db) -> dict:
    """Device id -> Ceilings: measured now and stored with --probe, else as stored (or None)."""
    from ..measure import roofline

    if not probe:
        return {d.id: ceilings_in(db, d.fingerprint.key) for d in infos}
    from ..cache import Store
    from ..devices import open_device

    store = Store(db)
    out = {}
    for d in infos:
        click.echo(f"probing {d.id} ({d.name}) ...", err=True)
        out[d.id] = roofline.measure_and_store(store, open_device(d))
    return out


def _ceilings_dict(c) -> dict | None:
    return None if c is None else {"gbps": c.gbps, "gflops": c.gflops, "measured_at": c.measured_at, "details": dict(c.details or {})}
