"""The recorded-space runner: a device and kernel recorded in a file, answering from its recorded timings.

A recorded space (Kernel Tuner cache file or T4 file) stands for one device
and one kernel template. Its search space is the configs in the file, as a
template's constraints would give them; a config absent from the file is
infeasible, one recorded as failed fails again with its recorded reason.
Running a config costs its recorded compile and benchmark time on a
simulated clock, so strategies can be compared on cost as well as count.
"""

from __future__ import annotations

from pathlib import Path

from .files import RecordedConfig, RecordedSpace, load
from ..identity import guess_device_type, guess_vendor, recorded_cpu_name
from ..search.space import SearchSpace
from ..types import Config, DeviceInfo, Fingerprint, Measurement, Record, Timing


def recorded_fingerprint(rec: RecordedSpace) -> Fingerprint:
    """The device of a recorded file: the file names only the device, so its type and vendor are guessed
    from the name (the same guess when the file is imported, so both give one device key); a CPU is named
    as its chip, without PoCL's decoration, as this machine's fingerprint names it."""
    kind = guess_device_type(rec.device_name)
    name = recorded_cpu_name(rec.device_name) if kind == "cpu" else rec.device_name
    return Fingerprint("replay", guess_vendor(name), kind, "", name, rec.format)


class RecordedRunner:
    """A :class:`~tunesvc.measure.Runner` over one recorded device + kernel: its space, and
    ``evaluate`` answering from the file."""

    replaced = 0

    def __init__(self, recorded: RecordedSpace | str | Path):
        self.recorded = recorded if isinstance(recorded, RecordedSpace) else load(recorded)
        fp = recorded_fingerprint(self.recorded)
        self.info = DeviceInfo(
            id=f"replay:{self.recorded.name}", fingerprint=fp, platform="replay", version=self.recorded.format,
            c_version="", compute_units=0, max_work_group_size=0, max_work_item_sizes=(), local_mem_size=0,
            local_mem_type="", preferred_vector_width_float=0, fp16=False, fp64=False, global_mem_size=0, max_alloc_size=0,
        )
        self.space = SearchSpace(self.recorded.dims, [c.config for c in self.recorded.configs])
        #: simulated seconds spent compiling and benchmarking so far
        self.clock = 0.0
        self.evaluations = 0

    def __repr__(self) -> str:
        return f"<RecordedRunner {self.recorded.name!r} {self.recorded.kernel_name} on {self.recorded.device_name!r}>"

    def reset(self) -> None:
        self.clock = 0.0
        self.evaluations = 0

    def evaluate(self, config: Config, best: float | None = None) -> Measurement:
        """The recorded outcome of ``config``; a config absent from the file is a constraint failure.
        ``best`` is ignored: a recording costs the same whatever is compared with it."""
        rec = self.recorded.by_config.get(config)
        if rec is None:
            return Measurement(config, "constraint", "not in the recorded space")
        self.clock += rec.compile_seconds + rec.benchmark_seconds
        self.evaluations += 1
        return to_measurement(rec)

    def compare(self, configs) -> list[Measurement]:
        """A recording has one outcome per config: re-measuring gives it again, at no cost."""
        return [to_measurement(self.recorded.by_config[c]) if c in self.recorded.by_config
                else Measurement(c, "constraint", "not in the recorded space") for c in configs]

    def close(self) -> None:
        """Nothing to release."""


def to_measurement(rec: RecordedConfig) -> Measurement:
    extra = {"benchmark_seconds": rec.benchmark_seconds}
    if not rec.ok:
        return Measurement(rec.config, rec.status, rec.reason, compile_seconds=rec.compile_seconds, extra=extra)
    assert rec.time is not None  # an ok config has its recorded time
    samples = rec.samples or (rec.time,)
    # The recorded objective (Kernel Tuner's mean) stands in for the median, so that replayed
    # figures match what Kernel Tuner and every other tool replaying the file report.
    timing = Timing(median=rec.time, min=min(samples), max=max(samples), iqr=0.0, count=len(samples))
    return Measurement(rec.config, "ok", timing=timing, compile_seconds=rec.compile_seconds, extra=extra)


def to_records(rec: RecordedSpace, dtype: str = "float32") -> list[Record]:
    """Every config of a recorded file as store records (device from the file, template = kernel name,
    template hash = the parameter space), e.g. to seed a search on another device by transfer."""
    fp = recorded_fingerprint(rec)
    return [Record(fp, rec.kernel_name, rec.space_hash, dtype, rec.problem_size, to_measurement(c), source=rec.name)
            for c in rec.configs]
