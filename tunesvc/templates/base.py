"""The template interface: a parameterised kernel and everything needed to tune it.

A template declares its tunable parameters and their values, constraints as
named predicates, the buffers and kernel launches for a config and shape,
input generation, a float64 reference with a tolerance per dtype, and its FLOP
and byte counts. Kernel sources live in ``.cl`` files beside the module, every
tunable written as ``#ifndef NAME / #define NAME default`` so the file compiles
on its own.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import InvalidConfigError, InvalidShapeError, UnsupportedDtypeError
from ..types import Config, DeviceInfo, shape_str

#: dtype name -> numpy dtype and the C type the kernels use for storage.
DTYPES = {"float32": (np.float32, "float"), "float16": (np.float16, "half")}
DTYPE_BYTES = {"float32": 4, "float16": 2}


_DIALECT_DIR = Path(__file__).parent / "dialect"


def ceil_div(a: int, b: int) -> int:
    """a / b rounded up, for work-group and tile counts."""
    return -(-a // b)


def pow2_ceil(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(0, (n - 1).bit_length())


def prelude(dialect: str) -> str:
    """The macros that map template sources onto one backend's C dialect."""
    return (_DIALECT_DIR / f"{dialect}.h").read_text()


@dataclass(frozen=True)
class Param:
    """A tunable parameter: a name (a C macro in the source), its ordered values and default."""

    name: str
    values: tuple
    default: Any
    help: str = ""

    def __post_init__(self):
        if self.default not in self.values:
            raise ValueError(f"default {self.default!r} of {self.name} is not among its values")


@dataclass(frozen=True)
class Context:
    """What a constraint may look at besides the config."""

    shape: tuple[int, ...]
    dtype: str
    device: DeviceInfo | None = None  # None: check only what holds on every device

    @property
    def known_device(self) -> DeviceInfo:
        """The device, for a constraint with ``needs_device`` (only ever checked with one)."""
        if self.device is None:
            raise ValueError("this constraint needs a device: the context has none")
        return self.device


@dataclass(frozen=True)
class Constraint:
    """A named predicate a valid config satisfies; the name says why a config was rejected."""

    name: str
    check: Callable[[Config, Context], bool]
    needs_device: bool = False


@dataclass(frozen=True)
class BufferSpec:
    """A device buffer of a launch plan: an input, an output or scratch space."""

    name: str
    shape: tuple[int, ...]
    dtype: Any  # numpy dtype
    role: str  # "in", "out" or "scratch"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Offset:
    """A launch argument: the element offset (a C ``int``) at which input ``buffer``'s data starts
    within the buffer the kernel gets for it. A template whose kernels take one per input lets a
    CPU device use a caller's array in place from an aligned address below its start."""

    buffer: str


@dataclass(frozen=True)
class Launch:
    """One kernel launch: the kernel, its geometry and its arguments.

    ``args`` are buffer names (str) or scalars given as ``numpy`` scalars
    (``np.int32(5)``) so the backend knows their C type. An ``Offset`` among them becomes
    ``np.int32(0)``, the offset of a buffer of one's own (the tuner's), and its position is kept
    in ``offsets``; ``at`` gives the launch for other offsets.
    """

    kernel: str
    global_size: tuple[int, ...]
    local_size: tuple[int, ...]
    args: tuple
    offsets: tuple[tuple[int, str], ...] = ()  # (argument index, input buffer), from the Offsets

    def __post_init__(self):
        marks = tuple((i, a.buffer) for i, a in enumerate(self.args) if isinstance(a, Offset))
        if marks:
            object.__setattr__(self, "offsets", self.offsets + marks)
            object.__setattr__(self, "args", tuple(np.int32(0) if isinstance(a, Offset) else a for a in self.args))

    def at(self, offsets: Mapping[str, int]) -> "Launch":
        """This launch with the given element offsets of its input buffers (0 for those not given)."""
        if not self.offsets:
            return self
        args = list(self.args)
        for i, name in self.offsets:
            args[i] = np.int32(offsets.get(name, 0))
        return replace(self, args=tuple(args))


@dataclass(frozen=True)
class Plan:
    """Buffers and launches that run one config on one shape."""

    buffers: tuple[BufferSpec, ...]
    launches: tuple[Launch, ...]
    defines: Mapping[str, Any] = field(default_factory=dict)

    def buffer(self, name: str) -> BufferSpec:
        return next(b for b in self.buffers if b.name == name)


@dataclass(frozen=True)
class Probe:
    """A cheap first look at a config's speed: ``before`` run in full, then ``launch``, the plan's
    main launch cut down to ``fraction`` of its work-groups. ``before``'s time plus ``launch``'s
    divided by ``fraction`` estimates a launch of the whole plan; launches after the main one are
    not run, so they are not counted (see :meth:`KernelTemplate.probe`)."""

    before: tuple[Launch, ...]
    launch: Launch
    fraction: float


def probe_of(before: Sequence[Launch], launch: Launch, fraction: float, least_groups: int = 8) -> Probe | None:
    """``launch`` cut to about ``fraction`` of its work-groups along its longest dimension of
    groups (the first ones), at least ``least_groups`` groups in all so every core has work; None
    where that would be half the launch or more (too little saved to be worth a probe)."""
    groups = [g // lsz for g, lsz in zip(launch.global_size, launch.local_size)]
    dim = max(range(len(groups)), key=lambda d: groups[d])
    others = int(np.prod(groups)) // max(groups[dim], 1)
    keep = max(math.ceil(groups[dim] * fraction), math.ceil(least_groups / max(others, 1)))
    if keep * 2 > groups[dim]:
        return None
    size = list(launch.global_size)
    size[dim] = keep * launch.local_size[dim]
    return Probe(tuple(before), replace(launch, global_size=tuple(size)), keep / groups[dim])


class Expected(dict):
    """A reference (buffer name -> float64 array) that remembers what is derived from it: the
    evaluator checks every candidate against one reference, and an error scale such as matmul's
    ``|A|·|B|`` costs as much as the reference itself. ``derived(key, make)`` makes once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._derived: dict[Any, Any] = {}

    def derived(self, key, make: Callable[[], Any]):
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]


def derived(ref: Mapping, key, make: Callable[[], Any]):
    """``make()``, remembered in ``ref`` when it is an :class:`Expected` (a plain dict: made each time)."""
    return ref.derived(key, make) if isinstance(ref, Expected) else make()


class KernelTemplate(ABC):
    """Base class of every template. Subclasses set the class attributes and the abstract methods."""

    name: str = ""
    description: str = ""
    source_file: str = ""  # relative to the module's folder, or absolute
    kernel_names: tuple[str, ...] = ()
    dims: tuple[str, ...] = ()  # names of the shape's dimensions, e.g. ("M", "N", "K")
    dtypes: tuple[str, ...] = ("float32",)
    params: tuple[Param, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    default_shape: tuple[int, ...] = ()
    bound: str = "flops"  # which ceiling bounds it: "flops" or "bandwidth"

    # ---- source -------------------------------------------------------------------------
    def source_path(self) -> Path:
        """``source_file``, relative to the module of the class that declares it (so a subclass
        defined elsewhere, or a user template loaded from a file, still finds its source)."""
        p = Path(self.source_file)
        if not p.is_absolute():
            import inspect

            owner = next((k for k in type(self).__mro__ if "source_file" in vars(k)), type(self))
            p = Path(inspect.getfile(owner)).parent / p
        return p

    @cached_property
    def source(self) -> str:
        return self.source_path().read_text()

    def render(self, dialect: str = "opencl") -> str:
        """The full program text for a backend: its dialect prelude, then the template source."""
        return prelude(dialect) + f'\n#line 1 "{self.source_path().name}"\n' + self.source

    @cached_property
    def source_hash(self) -> str:
        """Hash of everything that decides what a config computes and how fast: the kernel
        source, the dialect preludes and the parameter space. Records of an older hash are stale."""
        h = hashlib.sha256(self.source.encode())
        for dialect in sorted(p.stem for p in _DIALECT_DIR.glob("*.h")):
            h.update(prelude(dialect).encode())  # the preludes decide the generated code too
        h.update(repr([(p.name, p.values) for p in self.params]).encode())
        return h.hexdigest()[:16]

    # ---- parameters ---------------------------------------------------------------------
    @cached_property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def default_config(self) -> Config:
        return Config({p.name: p.default for p in self.params})

    def all_configs(self):
        """Every combination of parameter values, valid or not, in a stable order."""
        names = self.param_names
        for values in itertools.product(*(p.values for p in self.params)):
            yield Config(dict(zip(names, values)))

    def valid_configs(self, ctx: Context) -> list[Config]:
        """Every valid config, in the order of ``all_configs``. Constraints see plain dicts
        and only the valid ones become Configs: spaces of 10^5 combinations take well under
        a second."""
        names = self.param_names
        checks = [c.check for c in self.constraints if ctx.device is not None or not c.needs_device]
        out = []
        for values in itertools.product(*(p.values for p in self.params)):
            d = dict(zip(names, values))
            # a plain dict stands in for the Config: constraints only index it, and this is the hot loop
            if all(check(d, ctx) for check in checks):  # type: ignore[arg-type]
                out.append(Config(d))
        return out

    def violations(self, config: Config, ctx: Context) -> list[str]:
        """Names of the constraints this config breaks (empty: valid)."""
        return [
            c.name
            for c in self.constraints
            if (ctx.device is not None or not c.needs_device) and not c.check(config, ctx)
        ]

    def is_valid(self, config: Config, ctx: Context) -> bool:
        return not self.violations(config, ctx)

    def check_config(self, values: Mapping[str, Any]) -> Config:
        """Validate names and values from outside (a file, a user); return a Config."""
        unknown = set(values) - set(self.param_names)
        if unknown:
            raise InvalidConfigError(f"{self.name}: unknown parameter(s) {sorted(unknown)}; known: {list(self.param_names)}")
        missing = set(self.param_names) - set(values)
        if missing:
            raise InvalidConfigError(f"{self.name}: missing parameter(s) {sorted(missing)}")
        for p in self.params:
            v = values[p.name]
            if type(v) is bool or v not in p.values:
                raise InvalidConfigError(f"{self.name}: {p.name}={v!r} is not one of {list(p.values)}")
        return Config(values)

    # ---- shapes and dtypes --------------------------------------------------------------
    def parse_shape(self, shape: str | Sequence[int]) -> tuple[int, ...]:
        """Parse ``"MxNxK"`` or a sequence into a validated tuple; raise InvalidShapeError."""
        want = "x".join(self.dims)
        if isinstance(shape, str):
            parts = shape.strip().lower().split("x")
            try:
                dims = tuple(int(p) for p in parts)
            except ValueError:
                raise InvalidShapeError(f"shape {shape!r} is not {want} with positive integers, e.g. {shape_str(self.default_shape)}") from None
        else:
            try:
                dims = tuple(int(d) for d in shape)
            except (TypeError, ValueError):
                raise InvalidShapeError(f"shape {shape!r} is not a sequence of {len(self.dims)} integers ({want})") from None
        if len(dims) != len(self.dims):
            raise InvalidShapeError(f"shape {shape!r} has {len(dims)} dimension(s); {self.name} takes {len(self.dims)}: {want}, e.g. {shape_str(self.default_shape)}")
        bad = [n for n, d in zip(self.dims, dims) if d < 1]
        if bad:
            raise InvalidShapeError(f"shape {shape!r}: {', '.join(bad)} must be >= 1 ({want})")
        if any(d >= 2**31 for d in dims):
            raise InvalidShapeError(f"shape {shape!r}: dimensions must be below 2^31")
        self.validate_shape(dims)
        return dims

    def validate_shape(self, shape: tuple[int, ...]) -> None:
        """Template-specific checks beyond positivity; raise InvalidShapeError."""

    def check_dtype(self, dtype: str, device: DeviceInfo | None = None) -> str:
        if dtype not in DTYPES:
            raise UnsupportedDtypeError(f"unknown dtype {dtype!r}; use one of {list(DTYPES)}")
        if dtype not in self.dtypes:
            raise UnsupportedDtypeError(f"{self.name} does not support {dtype}; use one of {list(self.dtypes)}")
        if device is not None and dtype == "float16" and not device.fp16:
            raise UnsupportedDtypeError(f"device {device.name!r} has no float16 support (cl_khr_fp16); use --dtype float32")
        return dtype

    # ---- what subclasses provide ------------------------------------------------------
    @abstractmethod
    def plan(self, config: Config, shape: tuple[int, ...], dtype: str) -> Plan:
        """Buffers, launches and compile-time defines for this config and shape."""

    @abstractmethod
    def make_inputs(self, shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random inputs, keyed by buffer name, in the storage dtype."""

    @abstractmethod
    def reference(self, inputs: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The expected outputs in float64, keyed by buffer name."""

    @abstractmethod
    def flops(self, shape: tuple[int, ...]) -> float:
        """Floating-point operations of one run."""

    @abstractmethod
    def bytes_moved(self, shape: tuple[int, ...], dtype: str) -> float:
        """Minimum bytes read plus written by one run."""

    def tolerance(self, dtype: str, shape: tuple[int, ...]) -> float:
        """Allowed error relative to the reference's error scale (see ``check``)."""
        return {"float32": 1e-5, "float16": 2e-3}[dtype]

    def error_scale(self, inputs: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        """Per-element scale the error is compared against; override where |ref| is a poor scale."""
        return np.abs(ref[name]) + 1.0

    def check(self, outputs: Mapping[str, np.ndarray], inputs, ref, shape, dtype) -> str | None:
        """None if every output matches the reference, else a short reason."""
        tol = self.tolerance(dtype, shape)
        for name, want in ref.items():
            got = outputs[name].astype(np.float64)
            if not np.all(np.isfinite(got)):
                bad = int(np.size(got) - np.count_nonzero(np.isfinite(got)))
                return f"{name}: {bad} of {got.size} elements not finite (unwritten or overflow)"
            err = np.abs(got - want) / derived(ref, ('scale', name), lambda: self.error_scale(inputs, ref, name))
            worst = float(err.max()) if err.size else 0.0
            if worst > tol:
                idx = np.unravel_index(int(err.argmax()), err.shape)
                return f"{name}: relative error {worst:.3g} > {tol:.3g} at {tuple(int(i) for i in idx)}"
        return None

    def probe(self, plan: Plan, fraction: float) -> Probe | None:
        """A cut-down launch of ``plan`` that estimates its time (see :class:`Probe`), or None: no
        probe (the default). A template overrides this only where a work-group's work does not
        depend on how many work-groups there are (no grid-stride loops) and the first work-groups
        alone write only inside the outputs: the evaluator then runs the probe on the
        verification inputs before the verification launch, to abandon a hopeless config at a
        fraction of one launch's cost."""
        return None

    def bound_for(self, shape: tuple[int, ...]) -> str:
        """Which ceiling bounds this problem ("flops" or "bandwidth"); ``bound`` unless a
        template's regime changes with the shape (attention: decode vs prefill)."""
        return self.bound

    def describe(self) -> str:
        return self.description or (self.__doc__ or "").strip().splitlines()[0]
