"""Typed values that travel through tunesvc: devices, configs, measurements.

Frozen dataclasses, so a value can be a dict key, cannot be changed behind a
caller's back, and says in its type what it is.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

#: Status of a measured config. ``ok`` has times; every other status has a reason.
STATUSES = ("ok", "build", "launch", "runtime", "wrong_result", "constraint", "timeout", "crash")

Shape = tuple  # tuple[int, ...]; named for readability in signatures


def shape_str(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(d)) for d in shape)


def parse_shape(text: str) -> tuple[int, ...]:
    """The shape a :func:`shape_str` text names ('64x64x64' -> (64, 64, 64)); unchecked: a template's
    ``parse_shape`` checks what a user typed."""
    return tuple(int(p) for p in text.split("x"))


@functools.lru_cache(maxsize=65536)  # a cold lookup ranks every tuned shape by it: few distinct pairs, asked often
def shape_distance(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """How far apart two shapes (tuples) are: the Euclidean distance of their dimensions' logarithms
    (twice as large in one dimension is as far as half as large); infinite between shapes of different rank."""
    if len(a) != len(b):
        return math.inf
    return math.dist([math.log(max(int(d), 1)) for d in a], [math.log(max(int(d), 1)) for d in b])


@dataclass(frozen=True)
class Fingerprint:
    """Layered identity of a device, from coarse to fine: the hardware (vendor, type, architecture,
    name), then the driver that shows it (backend, driver).

    How two fingerprints are related (``exact``, ``family``, ``vendor``) is
    :func:`tunesvc.identity.relation`'s to say, for lookup and transfer alike.
    """

    backend: str
    vendor: str
    device_type: str  # "gpu", "cpu", "accelerator", "other"
    architecture: str  # family: e.g. "znver3", "sm_90", "gfx90a"; "" if unknown
    name: str
    driver: str

    @functools.cached_property  # a lookup compares keys of every related device: join them once
    def key(self) -> str:
        """Exact identity: every layer joined."""
        return "|".join((self.backend, self.vendor, self.device_type, self.architecture, self.name, self.driver))

    @classmethod
    def from_key(cls, key: str) -> "Fingerprint":
        parts = key.split("|")
        if len(parts) != 6:
            raise ValueError(f"not a device fingerprint: {key!r}")
        return cls(*parts)


@dataclass(frozen=True)
class DeviceInfo:
    """What a backend reports about one device; enough to check constraints."""

    id: str  # "opencl:P:D" or "cuda:N"
    fingerprint: Fingerprint
    platform: str
    version: str  # e.g. "OpenCL 3.0 PoCL" or "CUDA 12.4"
    c_version: str  # OpenCL C version or compute capability
    compute_units: int
    max_work_group_size: int
    max_work_item_sizes: tuple[int, ...]
    local_mem_size: int
    local_mem_type: str  # "local" (dedicated) or "global" (emulated)
    preferred_vector_width_float: int
    fp16: bool
    fp64: bool
    global_mem_size: int
    max_alloc_size: int

    @property
    def name(self) -> str:
        return self.fingerprint.name

    @property
    def vendor(self) -> str:
        return self.fingerprint.vendor

    @property
    def device_type(self) -> str:
        return self.fingerprint.device_type

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fingerprint"] = asdict(self.fingerprint)
        d["max_work_item_sizes"] = list(self.max_work_item_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeviceInfo":
        d = dict(d)
        d["fingerprint"] = Fingerprint(**d["fingerprint"])
        d["max_work_item_sizes"] = tuple(d["max_work_item_sizes"])
        return cls(**d)


class Config(Mapping[str, Any]):
    """An immutable, hashable mapping of parameter name to value.

    Its canonical JSON (sorted keys) is how it is stored and compared.
    """

    __slots__ = ("_d", "_key")

    def __init__(self, values: Mapping[str, Any] | None = None, **kw: Any):
        d = dict(values or {}, **kw)
        self._d = MappingProxyType(dict(sorted(d.items())))
        self._key = json.dumps(self._d.copy(), sort_keys=True, separators=(",", ":"))

    def __getitem__(self, k: str) -> Any:
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return self._key == other._key
        if isinstance(other, Mapping):
            return self._d == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in self._d.items()) + ")"

    def __reduce__(self):
        # a mapping proxy does not pickle; the plain dict does (measurements cross process pipes)
        return (Config, (dict(self._d),))

    @property
    def key(self) -> str:
        return self._key

    def replace(self, **kw: Any) -> "Config":
        return Config({**self._d, **kw})

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls(json.loads(text))


@dataclass(frozen=True)
class Timing:
    """Kernel times of one config, in seconds, from device events."""

    median: float
    min: float
    max: float
    iqr: float
    count: int

    @classmethod
    def from_samples(cls, samples: list[float]) -> "Timing":
        s = sorted(samples)
        q = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else [s[0]] * 3
        return cls(median=statistics.median(s), min=s[0], max=s[-1], iqr=q[2] - q[0], count=len(s))


@dataclass(frozen=True)
class Measurement:
    """The outcome of evaluating one config: times, or a failure with its reason."""

    config: Config
    status: str  # one of STATUSES
    reason: str = ""
    timing: Timing | None = None
    gflops: float | None = None
    gbps: float | None = None
    compile_seconds: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def time(self) -> float:
        """Median kernel time; infinity for a failed config, so it sorts last."""
        return self.timing.median if self.timing else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form every machine-readable output uses: plain numbers, units in the names,
        null times for a failed config."""
        t = self.timing
        return {"config": dict(self.config), "status": self.status, "reason": self.reason,
                "time_s": t.median if t else None, "time_min_s": t.min if t else None, "time_max_s": t.max if t else None,
                "time_iqr_s": t.iqr if t else None, "runs": t.count if t else 0, "gflops": self.gflops, "gbps": self.gbps,
                "compile_s": self.compile_seconds}


@dataclass(frozen=True)
class Problem:
    """One tuning problem: a template version, a shape and a dtype, on one device.

    Its ``key`` is the store's key of the problem's records less the config; nobody else
    assembles it.
    """

    template: str
    template_hash: str
    shape: tuple[int, ...]
    dtype: str
    device: Fingerprint

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """(device_key, template, template_hash, dtype, shape text), the order of the store's columns."""
        return (self.device.key, self.template, self.template_hash, self.dtype, shape_str(self.shape))

    def on(self, device: Fingerprint) -> "Problem":
        """The same problem on another device."""
        return Problem(self.template, self.template_hash, self.shape, self.dtype, device)

    def __str__(self) -> str:
        return f"{self.template} {shape_str(self.shape)} {self.dtype}"


@dataclass(frozen=True)
class Record:
    """One stored measurement with everything that keys it."""

    fingerprint: Fingerprint
    template: str
    template_hash: str
    dtype: str
    shape: tuple[int, ...]
    measurement: Measurement
    created_at: str = ""
    tunesvc_version: str = ""
    source: str = "local"

    @property
    def config(self) -> Config:
        return self.measurement.config

    @property
    def problem(self) -> Problem:
        return Problem(self.template, self.template_hash, tuple(self.shape), self.dtype, self.fingerprint)

    @classmethod
    def of(cls, problem: Problem, measurement: Measurement, **provenance: Any) -> "Record":
        """A record of ``measurement`` for ``problem`` (``source``, ``created_at``, ... as keywords)."""
        return cls(problem.device, problem.template, problem.template_hash, problem.dtype, tuple(problem.shape),
                   measurement, **provenance)


@dataclass(frozen=True)
class LookupResult:
    """What :func:`tunesvc.lookup` answers: a config and where it came from.

    ``level`` is ``exact``, ``nearest_shape``, ``family``, ``vendor``,
    ``shipped`` or ``default``; ``explain`` says, level by level, why the ones
    above did not answer.
    """

    template: str
    shape: tuple[int, ...]
    dtype: str
    config: Config
    level: str
    time: float | None = None
    gflops: float | None = None
    tuned_shape: tuple[int, ...] | None = None
    device_key: str | None = None
    explain: tuple[str, ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.config)
