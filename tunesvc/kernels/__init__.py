"""Ready tuned kernels: run the best known config of a template on numpy arrays.

A framework calls these in its hot path, so a repeated call costs the memoised lookup, one dict
hit and the run: the plan, the program and the scratch buffers of each (device, template version,
config, shape, dtype) are kept (``prepare``). On a CPU device the kernels read the caller's
arrays in place and write straight into the fresh array returned; other devices (GPUs) copy
through device buffers that are kept likewise. Every call returns fresh output arrays: a later
call never writes into them.

A driver that uses host memory in place only at an alignment (Intel's CPU runtime: 128 bytes;
numpy's large arrays start 16 bytes past a page) gets, for the inputs of templates whose kernels
take an element offset (``Offset`` in their launches: the built-in ones), a buffer from the
aligned address below the array and the array's offset within it: no copy. Inputs of other
templates (user templates that take no offsets) are copied into a kept aligned array instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from .. import templates
from ..devices import Device, open_device
from ..errors import UsageError
from ..lookup import lookup
from ..templates.base import Context
from ..types import Config

_MAX_PREPARED = 32  # each holds its scratch buffers (and a GPU's input and output buffers)
_PREPARED: OrderedDict = OrderedDict()
_DEVICES: dict = {}
_LOCK = threading.Lock()  # guards the two memos, never a build or a run
# One build at a time: a problem first called from several threads is built once, and the
# driver's build (its warnings filter, pyopencl's cache) is not entered concurrently.
_BUILD_LOCK = threading.Lock()


class Prepared:
    """One problem ready to run again and again: its plan, built program and scratch buffers.

    Calls on one Prepared from several threads take turns (they share the scratch buffers and
    the kernels' arguments); different problems run concurrently.
    """

    def __init__(self, device: Device, template, config: Config, shape: tuple[int, ...], dtype: str):
        self.device, self.template, self.config, self.shape, self.dtype = device, template, config, shape, dtype
        self.plan = template.plan(config, shape, dtype)
        self.program = device.build(template.render(device.dialect), self.plan.defines, template.kernel_names)
        self._inputs = [b for b in self.plan.buffers if b.role == "in"]
        self._outputs = [b for b in self.plan.buffers if b.role == "out"]
        self._nbytes = {b.name: b.nbytes for b in self.plan.buffers}
        self._kept = {b.name: device.alloc(b.nbytes) for b in self.plan.buffers if b.role == "scratch"}
        self._hosts: list[np.ndarray] = []  # the host arrays some kept buffers are made of
        self._takes_offset = frozenset(name for launch in self.plan.launches for _, name in launch.offsets)
        self._bound: tuple = ((), self.plan.launches)  # the launches of the latest nonzero offsets
        self._lock = threading.Lock()
        self.kernel_seconds = 0.0  # of the latest call, by device events
        self.offsets: dict[str, int] = {}  # of the latest call: inputs read from an aligned address below them
        self.staged = 0  # inputs copied through a kept buffer, over all calls

    def _copy(self, spec):
        """The kept buffer an array that cannot be used in place is copied through: on a device
        that shares host memory, an aligned host array of ours (numpy copies into it fastest)."""
        buf = self._kept.get(spec.name)
        if buf is None:
            host = self.device.empty(spec.shape, spec.dtype)
            if self.device.in_place(host):
                buf = self.device.wrap(host, writable=True)
                self._hosts.append(host)
            else:
                buf = self.device.alloc(self._nbytes[spec.name])
            self._kept[spec.name] = buf
        return buf

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on host arrays keyed by buffer name (converted to the plan's dtype and made
        C-contiguous once where they are not); return fresh output arrays."""
        dev = self.device
        with self._lock:
            bufs: dict[str, Any] = dict(self._kept)
            held = []  # the arrays wrapped buffers stand on, alive until the run is over
            offsets = {}
            for spec in self._inputs:
                arr = np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype)
                if arr.nbytes != self._nbytes[spec.name]:
                    raise UsageError(f"{self.template.name}: input {spec.name} has {arr.size} elements; "
                                     f"shape {self.shape} needs {int(np.prod(spec.shape))}")
                off = dev.in_place_offset(arr)
                if off == 0 or (off is not None and spec.name in self._takes_offset):
                    bufs[spec.name] = dev.wrap(arr, writable=False, offset=off)
                    held.append(arr)
                    if off:
                        offsets[spec.name] = off
                else:
                    bufs[spec.name] = self._copy(spec)
                    dev.write(bufs[spec.name], arr)
                    self.staged += 1
            out = {}
            for spec in self._outputs:
                arr = out[spec.name] = dev.empty(spec.shape, spec.dtype)
                bufs[spec.name] = dev.wrap(arr, writable=True) if dev.in_place(arr) else self._copy(spec)
            self.offsets = offsets
            self.kernel_seconds = dev.run_into(self.program, self._launches(offsets), bufs, out)
            del held
        return out

    def _launches(self, offsets: dict[str, int]) -> tuple:
        """The plan's launches with these input offsets: the plan's own for none; else made once
        per change of offsets (a framework's arrays usually sit at the same one call after call)."""
        if not offsets:
            return self.plan.launches
        key = tuple(sorted(offsets.items()))
        if self._bound[0] != key:
            self._bound = (key, tuple(launch.at(offsets) for launch in self.plan.launches))
        return self._bound[1]


def _device(spec) -> Device:
    """The opened device for a spec, resolved once per spec (not on every call)."""
    if isinstance(spec, Device):
        return spec
    try:
        dev = _DEVICES.get(spec)
    except TypeError:  # an unhashable spec: resolve it every time
        return open_device(spec)
    if dev is None:
        dev = open_device(spec)
        with _LOCK:
            _DEVICES[spec] = dev
    return dev


def prepare(template, shape, dtype: str = "float32", device=None, db=None, config: Config | None = None) -> Prepared:
    """The Prepared for ``template`` at ``shape`` with the best known (or the given) config,
    built on first use and kept (the most recent 32). An invalid config falls back to the default."""
    dev = _device(device)
    tpl = templates.get(template)
    shape = tuple(shape)
    if config is None:
        config = lookup(tpl.name, shape, dtype, dev.info, db).config  # memoised: one dict hit when warm
    key = (dev.info.id, tpl.name, tpl.source_hash, config, shape, dtype)
    prep = _PREPARED.get(key)
    if prep is not None:
        with _LOCK:
            if key in _PREPARED:
                _PREPARED.move_to_end(key)
        return prep
    tpl.check_dtype(dtype, dev.info)
    with _BUILD_LOCK:
        prep = _PREPARED.get(key)  # built meanwhile by the thread that held the lock
        if prep is None:
            run_config = config if tpl.is_valid(config, Context(shape, dtype, dev.info)) else tpl.default_config()
            prep = Prepared(dev, tpl, run_config, shape, dtype)
            with _LOCK:
                _PREPARED[key] = prep
                while len(_PREPARED) > _MAX_PREPARED:
                    _PREPARED.popitem(last=False)
    return prep


def clear_cache() -> None:
    """Forget prepared problems and resolved devices (tests; a server that wants its memory back)."""
    with _LOCK:
        _PREPARED.clear()
        _DEVICES.clear()


def run_tuned(template, inputs: dict[str, np.ndarray], shape, dtype: str, device=None, db=None, config: Config | None = None):
    """Run ``template`` on host arrays with the best known (or the given) config; return its outputs."""
    return prepare(template, shape, dtype, device, db, config)(inputs)


_FLOAT_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}


def _dtype_of(*arrays) -> str:
    dts = {a.dtype for a in arrays}
    if len(dts) != 1 or next(iter(dts)) not in _FLOAT_DTYPES:
        raise UsageError(f"arrays must all be float32 or all float16, got {sorted(str(d) for d in dts)}; convert with .astype(np.float32)")
    return _FLOAT_DTYPES[next(iter(dts))]


def matmul(a, b, device=None, db=None) -> np.ndarray:
    """``a @ b`` for 2-D float32 (or float16) arrays, with the tuned matmul kernel; a fresh array."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or 0 in a.shape or 0 in b.shape:
        raise UsageError(f"matmul needs non-empty 2-D arrays (M, K) and (K, N); got {a.shape} and {b.shape}")
    dtype = _dtype_of(a, b)
    shape = (a.shape[0], b.shape[1], a.shape[1])
    return run_tuned("matmul", {"A": a, "B": b}, shape, dtype, device, db)["C"]


def reduce(x, op: str = "sum", axis: int | None = -1, device=None, db=None) -> np.ndarray:
    """Reduce ``x`` along ``axis`` (``None``: the whole array) with ``op`` in sum, max, mean, sumsq.

    Accumulates in float32 and returns float32 for float32 and float16 input. A
    reduction along an axis other than the last copies ``x`` with that axis moved last.
    """
    from ..templates.reduce import OPS

    if op not in OPS:
        raise UsageError(f"unknown reduce op {op!r}; use one of {list(OPS)}")
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0:
        raise UsageError(f"reduce needs a non-empty array with at least one dimension; got shape {x.shape}")
    dtype = _dtype_of(x)
    if axis is None:
        rows, cols, out_shape = 1, x.size, ()
    else:
        if not -x.ndim <= axis < x.ndim:
            raise UsageError(f"axis {axis} is out of range for an array of {x.ndim} dimension(s)")
        x = np.moveaxis(x, axis, -1)
        out_shape = x.shape[:-1]
        cols = x.shape[-1]
        rows = x.size // cols
    flat = np.ascontiguousarray(x).reshape(rows, cols)
    out = run_tuned(f"reduce_{op}", {"x": flat}, (rows, cols), dtype, device, db)["out"]
    return out.reshape(out_shape)


def attention(q, k, v, causal: bool = False, scale: float | None = None, device=None, db=None) -> np.ndarray:
    """softmax(q·kᵀ·scale)·v for q (B, H, Q, D) and k, v (B, H, KV, D), fused, with the tuned kernel.

    ``scale`` defaults to 1/sqrt(D). ``causal`` masks key j for query i when
    j > i + KV - Q (queries aligned to the end of the keys), so it needs Q <= KV.
    """
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3] or 0 in q.shape or 0 in k.shape:
        raise UsageError(f"attention needs non-empty q (B, H, Q, D) and k, v (B, H, KV, D); got {q.shape}, {k.shape}, {v.shape}")
    dtype = _dtype_of(q, k, v)
    b, h, nq, d = q.shape
    if scale is None:
        scale = 1.0 / float(np.sqrt(d))
    name = "attention_causal" if causal else "attention"
    inputs = {"Q": q, "K": k, "V": v, "scale": np.array([scale], dtype=np.float32)}
    return run_tuned(name, inputs, (b, h, nq, k.shape[2], d), dtype, device, db)["O"]
