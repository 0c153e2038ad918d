"""The evaluator: build a config, verify it against the float64 reference, then time it.

Every candidate runs first on fresh random inputs with its outputs poisoned
(all bytes 0xFF, a NaN pattern), so a kernel that skips elements cannot pass
on leftovers. Only a verified config is timed: one discarded warm-up, then
``Method.runs`` launches timed by device events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .devices.base import Device
from .errors import CandidateError, WrongResultError
from .templates.base import Context, KernelTemplate
from .types import Config, Measurement, Timing

POISON_BYTE = 0xFF


@dataclass(frozen=True)
class Method:
    """How a verified config is timed."""

    warmup: int = 1
    runs: int = 5


class Evaluator:
    def __init__(self, device: Device, template: KernelTemplate, shape, dtype: str, method: Method = Method(), seed: int = 0):
        self.device = device
        self.template = template
        self.shape = tuple(shape)
        self.dtype = dtype
        self.method = method
        self.ctx = Context(self.shape, dtype, device.info)
        self.source = template.render(device.dialect)
        self._rng = np.random.default_rng(seed)
        self._buffers: dict[tuple[str, int], object] = {}

    def _buffer(self, name: str, nbytes: int):
        key = (name, nbytes)
        if key not in self._buffers:
            self._buffers[key] = self.device.alloc(nbytes)
        return self._buffers[key]

    def evaluate(self, config: Config) -> Measurement:
        broken = self.template.violations(config, self.ctx)
        if broken:
            return Measurement(config, "constraint", "violates " + ", ".join(broken))
        plan = self.template.plan(config, self.shape, self.dtype)
        t0 = time.perf_counter()
        try:
            program = self.device.build(self.source, plan.defines, self.template.kernel_names)
            compile_seconds = time.perf_counter() - t0
            buffers = {b.name: self._buffer(b.name, b.nbytes) for b in plan.buffers}
            self._verify(program, plan, buffers)
            for _ in range(self.method.warmup):
                self.device.run(program, plan.launches, buffers)
            samples = [self.device.run(program, plan.launches, buffers) for _ in range(self.method.runs)]
        except CandidateError as e:
            return Measurement(config, e.reason, str(e), compile_seconds=time.perf_counter() - t0)
        timing = Timing.from_samples(samples)
        t = max(timing.median, 1e-12)
        return Measurement(
            config,
            "ok",
            timing=timing,
            gflops=self.template.flops(self.shape) / t * 1e-9,
            gbps=self.template.bytes_moved(self.shape, self.dtype) / t * 1e-9,
            compile_seconds=compile_seconds,
        )

    def _verify(self, program, plan, buffers) -> None:
        inputs = self.template.make_inputs(self.shape, self.dtype, self._rng)
        for spec in plan.buffers:
            if spec.role == "in":
                self.device.write(buffers[spec.name], inputs[spec.name])
            else:
                self.device.fill(buffers[spec.name], spec.nbytes, POISON_BYTE)
        self.device.run(program, plan.launches, buffers)
        outputs = {}
        for spec in plan.buffers:
            if spec.role == "out":
                outputs[spec.name] = np.empty(spec.shape, dtype=spec.dtype)
                self.device.read(buffers[spec.name], outputs[spec.name])
        ref = self.template.reference(inputs, self.shape)
        problem = self.template.check(outputs, inputs, ref, self.shape, self.dtype)
        if problem:
            raise WrongResultError(problem)
