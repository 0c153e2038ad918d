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
