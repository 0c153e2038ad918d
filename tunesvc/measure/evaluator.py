"""The evaluator: build a config, verify it against the float64 reference, then time it.

Every candidate runs first on random inputs with its outputs poisoned (all
bytes 0xFF, a NaN pattern), so a kernel that skips elements cannot pass on
leftovers. The inputs and their float64 reference are made once per evaluator
and shared by its candidates (at matmul 2048³ making them cost 0.75 s, a
quarter of a hopeless candidate's whole cost). Only a verified config is
timed, by the method in ``Method``:

* warm-up launches are discarded (first-touch, lazy JIT and clock ramp-up);
* launches are timed by device events until the median is known to
  ``precision`` (relative half-width of its ~95% interval) or ``max_runs`` /
  ``max_seconds`` is reached, never fewer than ``runs``;
* a problem smaller than ``rotate_bytes`` rotates through several copies of
  its buffers, so a small kernel is not timed with its data left hot in cache
  by the run before (which would flatter it against a larger one);
* ``compare`` re-measures a few configs interleaved (round-robin), so a drift
  in the machine's speed hits every one of them alike; the tuner uses it when
  the leaders' intervals, widened by ``drift``, overlap; ``confirm_rounds``
  rounds, or fewer where they would take more than about ``confirm_seconds``
  (never fewer than ``runs``, or ``slow_runs`` where every launch is slow);
* told the best time so far, a config whose verification launch (timed by
  device events like any other; on both CPU drivers the event excludes the
  first-launch compile, measured) or first warm-up launch takes more than
  ``abandon`` times that, or whose verification and warm-up launches both take
  more than ``abandon_two`` times that, is timed no further (the verification
  launch only judges where it took ``early_seconds`` or more): it cannot become
  the best, and timing it properly would cost the
  minimum number of launches, each slow (issue 12: 40 trials of matmul 2048³
  took 517 s, most of it timing hopeless candidates). It is recorded as what it
  is, a correct config with a rough time: status ``ok``, ``extra["abandoned"]``,
  and a reason that starts with ``abandoned`` (kept by the store, so a record
  read back says so too; see :func:`abandoned`);
* before that, told a best where a hopeless config would cost ``probe_seconds`` or more a
  launch, a config whose template allows it runs a probe first: a ``probe`` fraction of its
  work-groups, whose time, scaled to the whole grid, estimates a launch (0.72-1.47x the full
  timing at matmul 2048³). Two estimates over the abandon limit (the second launch warm) stop it
  unverified: status ``ok``, abandoned, with ``extra["unverified"]`` and a reason that starts
  ``abandoned before verification`` (whether it computes the right answer is not known; at 3x
  the best so far it cannot be the best of its run);
* a config whose verification launch took ``slow_seconds`` or more has that
  launch for its warm-up and ``slow_runs`` timed launches (if fewer than
  ``runs``): the first config, timed before there is a best to abandon it
  against, was a third of a tuning run's wall time at matmul 2048³ on PoCL.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from ..devices.base import Device
from ..errors import CandidateError, WrongResultError
from ..templates.base import Context, Expected, KernelTemplate
from ..types import Config, Measurement, Timing

POISON_BYTE = 0xFF
#: the reason of an abandoned config starts with this
ABANDONED = "abandoned"
#: the notch of a box plot (McGill, Tukey & Larsen 1978): median ± 1.57·IQR/√n is a ~95% interval
NOTCH = 1.57
MAX_SETS = 256
FIRST_WARMUP_SECONDS = 0.2


@dataclass(frozen=True)
class Method:
    """How a verified config is timed. ``Method.plain(5)``: warm-up, then a plain median of 5."""

    warmup: int = 1  # launches discarded before timing
    runs: int = 5  # at least this many timed launches
    max_runs: int = 60  # at most this many
    precision: float = 0.02  # stop once the median's interval half-width is within 2% of it
    max_seconds: float = 1.0  # wall time spent timing one config, at most (about)
    rotate_bytes: int = 64 << 20  # rotate buffer copies until they span this much (0: one copy)
    confirm: int = 4  # leaders re-measured interleaved when their intervals overlap (0: never)
    # A config's interval is measured in one short spell; on a shared machine the speed drifts
    # between spells by more than that. Intervals are widened by this fraction before the
    # overlap test, so leaders measured minutes apart are compared side by side.
    drift: float = 0.15
    confirm_rounds: int = 31  # interleaved rounds of that re-measurement, at most
    # ... and about this many seconds of it, at least ``runs`` rounds (at matmul 2048³ on PoCL,
    # 31 rounds of two leaders took 53 s of a 178 s tuning run)
    confirm_seconds: float = 10.0
    # A first launch this many times slower than the best so far stops the timing (0: never, nor
    # the two-launch rule below).
    # Several times, not a little: one launch on a busy machine can be slow by a fair margin.
    abandon: float = 3.0
    # Two launches (verification, warm-up) both this many times slower than the best so far stop
    # it too (0: never): slower by half in both is beyond the machine's noise (~30%), and timing
    # such a config in full at 2048³ costs several seconds for a rank it cannot take.
    abandon_two: float = 1.5
    # ... both judging by the verification launch, and only for a launch this long: the first
    # launches of a fresh program of a few milliseconds ran up to 2.4x their later median
    # (reduce_sum 4096x4096, both CPU drivers), those of 15 ms and more at most 1.8x, one at a time
    # (so the best config was abandoned in live runs); and a short config costs little to time.
    # Shorter configs are judged by their warm-up launch alone, at ``abandon``.
    early_seconds: float = 0.05
    # A verification launch this long is the warm-up (first-launch effects are small beside it),
    # and ``slow_runs`` timed launches are enough where ``runs`` would be more: at matmul 2048³
    # on PoCL the default config (always timed first, with no best to abandon it against) took
    # 4.8 s a launch, and its warm-up and five runs were a third of a 93 s tuning run. The
    # leaders are re-measured interleaved anyway (``compare``). 0 runs: off.
    slow_seconds: float = 1.0
    slow_runs: int = 3
    # Told a best so far where ``abandon`` times it is ``probe_seconds`` or more (so a hopeless
    # config would cost at least that a launch), a config is first run on this fraction of its
    # work-groups where its template allows (``KernelTemplate.probe``): an estimate over the
    # abandon limit, twice (the second launch warm), stops it before its verification launch. At
    # matmul 2048³ on PoCL seven hopeless configs took one verification launch each, 2.7-4.8 s,
    # a third of a tuning run. 0: never.
    probe: float = 0.125
    probe_seconds: float = 0.1

    def least_runs(self, launch: float) -> int:
        """Timed launches (or interleaved rounds) that are enough for launches of ``launch``
        seconds: ``runs``, or ``slow_runs`` where fewer and the launch is ``slow_seconds`` or more."""
        if self.slow_runs > 0 and launch >= self.slow_seconds:
            return min(self.runs, self.slow_runs)
        return self.runs

    @classmethod
    def plain(cls, runs: int = 5) -> "Method":
        """The naive method: one warm-up, a fixed number of runs, one buffer set, no confirmation,
        no early abandon."""
        return cls(warmup=1, runs=runs, max_runs=runs, precision=math.inf, max_seconds=math.inf, rotate_bytes=0, confirm=0,
                   abandon=0.0, abandon_two=0.0, slow_runs=0, probe=0.0)


def interval(t: Timing) -> tuple[float, float]:
    """~95% interval of the median, from what a stored Timing keeps (median, IQR, count)."""
    half = NOTCH * t.iqr / math.sqrt(max(t.count, 1))
    return t.median - half, t.median + half


def abandoned(m: Measurement) -> bool:
    """Whether a measurement's timing was stopped early as hopeless (also for a record read back
    from the store, which keeps the reason but not ``extra``)."""
    return m.ok and (bool(m.extra.get("abandoned")) or m.reason.startswith(ABANDONED))


def precise_enough(samples: Sequence[float], method: Method) -> bool:
    t = Timing.from_samples(list(samples))
    lo, hi = interval(t)
    return (hi - lo) / 2 <= method.precision * t.median


class Evaluator:
    """The in-process :class:`~tunesvc.measure.Runner`: one opened device, one template and problem."""

    replaced = 0  # an in-process runner has no worker to lose

    def __init__(self, device: Device, template: KernelTemplate, shape, dtype: str, method: Method = Method(), seed: int = 0):
        self.device = device
        self.template = template
        self.shape = tuple(shape)
        self.dtype = dtype
        self.method = method
        self.ctx = Context(self.shape, dtype, device.info)
        self.source = template.render(device.dialect)
        self._rng = np.random.default_rng(seed)
        self._sets: list[dict[tuple[str, int], object]] = [{}]
        self._timing_inputs: dict[str, np.ndarray] | None = None
        self._check_case: tuple[dict[str, np.ndarray], Expected] | None = None
        self._warm = False

    # ---- buffers ------------------------------------------------------------------------
    def _buffers(self, plan, index: int = 0) -> dict[str, object]:
        """Buffer set ``index`` for ``plan``, allocated on first use (set 0 is the verification set)."""
        while len(self._sets) <= index:
            self._sets.append({})
        pool = self._sets[index]
        out = {}
        for spec in plan.buffers:
            key = (spec.name, spec.nbytes)
            if key not in pool:
                pool[key] = self.device.alloc(spec.nbytes)
                if index > 0 and spec.role == "in":
                    # Real data, not garbage: NaNs or denormals would make timing runs slower than real ones.
                    self.device.write(pool[key], self._input(spec.name))
            out[spec.name] = pool[key]
        return out

    def _input(self, name: str) -> np.ndarray:
        if self._timing_inputs is None or name not in self._timing_inputs:
            self._timing_inputs = self.template.make_inputs(self.shape, self.dtype, self._rng)
        return self._timing_inputs[name]

    def _set_count(self, plan) -> int:
        size = sum(b.nbytes for b in plan.buffers)
        if self.method.rotate_bytes <= 0 or size >= self.method.rotate_bytes:
            return 1
        return min(MAX_SETS, math.ceil(self.method.rotate_bytes / max(size, 1)))

    # ---- one config ---------------------------------------------------------------------
    def evaluate(self, config: Config, on_built: Callable[[float], None] | None = None,
                 best: float | None = None) -> Measurement:
        """Build, verify and time one config. ``on_built`` is called with the compile time once
        the program is built (the worker uses it to restart its timeout for the run phase);
        ``best`` is the best time so far, against which a hopeless config is abandoned."""
        broken = self.template.violations(config, self.ctx)
        if broken:
            return Measurement(config, "constraint", "violates " + ", ".join(broken))
        plan = self.template.plan(config, self.shape, self.dtype)
        t0 = time.perf_counter()
        try:
            program = self.device.build(self.source, plan.defines, self.template.kernel_names)
            compile_seconds = time.perf_counter() - t0
            if on_built:
                on_built(compile_seconds)
            buffers = self._buffers(plan)
            inputs = self._load(plan, buffers)
            estimates, fraction = self._probe(program, plan, buffers, best)
            if estimates:
                assert best is not None
                m = self._measurement(config, estimates, compile_seconds, abandoned=True, unverified=True, probe=fraction)
                what = "probe" if len(estimates) == 1 else f"{len(estimates)} probes"
                why = (f"{ABANDONED} before verification: {what} of {fraction:.3g} of the work-groups estimate "
                       f"{m.time / best:.1f}x the best so far ({m.time:.3g} s vs {best:.3g} s)")
                return replace(m, reason=why)
            first = self._verify(program, plan, buffers, inputs)
            samples, hopeless = self._time(program, plan, best, first)
        except CandidateError as e:
            return Measurement(config, e.reason, str(e), compile_seconds=time.perf_counter() - t0)
        if hopeless:
            assert best is not None  # only a best so far makes a timing hopeless
            m = self._measurement(config, samples, compile_seconds, abandoned=True)
            what = "first launch" if len(samples) == 1 else f"first {len(samples)} launches"
            why = f"{ABANDONED}: {what} {m.time / best:.1f}x the best so far ({m.time:.3g} s vs {best:.3g} s)"
            return replace(m, reason=why)
        return self._measurement(config, samples, compile_seconds)

    def _measurement(self, config: Config, samples: list[float], compile_seconds: float, **extra) -> Measurement:
        timing = Timing.from_samples(samples)
        t = max(timing.median, 1e-12)
        return Measurement(
            config,
            "ok",
            timing=timing,
            gflops=self.template.flops(self.shape) / t * 1e-9,
            gbps=self.template.bytes_moved(self.shape, self.dtype) / t * 1e-9,
            compile_seconds=compile_seconds,
            extra=extra,
        )

    def _hopeless(self, launches: list[float], best: float | None, limit: float | None = None) -> bool:
        """Whether even the fastest of ``launches`` is ``limit`` (``abandon``) times the best time so far."""
        limit = self.method.abandon if limit is None else limit
        return bool(launches) and best is not None and limit > 0 and min(launches) > limit * best

    def _slow_pair(self, first: float, launch: float, best: float | None) -> bool:
        """Whether the verification launch and the next one are both ``abandon_two`` times the best
        (never with ``abandon`` 0: no early abandon at all)."""
        return self.method.abandon > 0 and self._hopeless([first, launch], best, self.method.abandon_two)

    def _time(self, program, plan, best: float | None = None, first: float | None = None) -> tuple[list[float], bool]:
        """(timed launches, whether the config was abandoned as hopeless; then the launches are the
        verification launch's (``first``), the warm-up's, or the first timed one without a warm-up)."""
        m = self.method
        need = m.least_runs(first) if first is not None else m.runs
        slow = need < m.runs  # the verification launch was long enough to be the warm-up
        if first is not None and first < m.early_seconds:
            first = None  # too short to judge by: the warm-up decides
        if first is not None and self._hopeless([first], best):
            return [first], True
        sets = [self._buffers(plan, i) for i in range(self._set_count(plan))]
        # The first config a process times also wakes the driver's thread pool and the clocks:
        # give it a longer warm-up, or the default (always timed first) looks slower than it is.
        until = time.perf_counter() + (0 if self._warm else FIRST_WARMUP_SECONDS)
        warm: list[float] = []  # timed like any launch, then discarded unless the config is hopeless
        while not slow and (len(warm) < m.warmup or (m.warmup and time.perf_counter() < until)):
            warm.append(self.device.run(program, plan.launches, sets[len(warm) % len(sets)]))
        self._warm = True
        if self._hopeless(warm, best):
            return warm, True
        if warm and first is not None and self._slow_pair(first, warm[0], best):
            return [first, warm[0]], True
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < m.max_runs:
            samples.append(self.device.run(program, plan.launches, sets[len(samples) % len(sets)]))
            if not warm and len(samples) == 1 and self._hopeless(samples, best):
                return samples, True
            if not warm and len(samples) == 1 and first is not None and self._slow_pair(first, samples[0], best):
                return [first, samples[0]], True
            if len(samples) >= need and (precise_enough(samples, m) or time.perf_counter() - start >= m.max_seconds):
                break
        return samples, False

    # ---- several configs, interleaved ---------------------------------------------------
    def compare(self, configs: Sequence[Config], rounds: int | None = None) -> list[Measurement]:
        """Re-measure verified configs round-robin, so a slow spell of the machine is shared by all.
        A config that now fails is returned with its failure."""
        rounds = rounds or self.method.confirm_rounds
        ready, out = [], {}
        per_round = 0.0  # seconds of one round, from the warm-up launches
        shortest = math.inf  # the shortest of those launches: how few rounds are enough
        for c in configs:
            plan = self.template.plan(c, self.shape, self.dtype)
            try:
                program = self.device.build(self.source, plan.defines, self.template.kernel_names)
                sets = [self._buffers(plan, i) for i in range(self._set_count(plan))]
                took = [self.device.run(program, plan.launches, sets[i % len(sets)]) for i in range(self.method.warmup)]
                per_round += min(took, default=0.0)
                shortest = min(shortest, min(took, default=0.0))
            except CandidateError as e:
                out[c] = Measurement(c, e.reason, str(e))
                continue
            ready.append((c, program, plan, sets))
        if per_round > 0 and math.isfinite(self.method.confirm_seconds):
            m = self.method
            rounds = min(rounds, max(m.least_runs(shortest), math.ceil(m.confirm_seconds / per_round)))
        samples: dict[Config, list[float]] = {c: [] for c, *_ in ready}
        for r in range(rounds if ready else 0):
            # Rotate the order every round: no config always runs right after the same neighbour.
            for c, program, plan, sets in ready[r % len(ready):] + ready[: r % len(ready)]:
                if c in out:
                    continue
                try:
                    samples[c].append(self.device.run(program, plan.launches, sets[r % len(sets)]))
                except CandidateError as e:
                    out[c] = Measurement(c, e.reason, str(e))
        for c, s in samples.items():
            if c not in out:
                out[c] = self._measurement(c, s, 0.0, interleaved=len(ready))
        return [out[c] for c in configs]

    def close(self) -> None:
        """Nothing to release: the opened device is shared by the process (devices.open_device)."""

    # ---- verification -------------------------------------------------------------------
    def _case(self) -> tuple[dict[str, np.ndarray], Expected]:
        """The verification inputs and their float64 reference, made on first use and kept."""
        if self._check_case is None:
            inputs = self.template.make_inputs(self.shape, self.dtype, self._rng)
            if self._timing_inputs is None:
                self._timing_inputs = inputs
            self._check_case = (inputs, Expected(self.template.reference(inputs, self.shape)))
        return self._check_case

    def _load(self, plan, buffers) -> dict[str, np.ndarray]:
        """Write the verification inputs into ``buffers``; returns them."""
        inputs, _ = self._case()
        for spec in plan.buffers:
            if spec.role == "in":
                self.device.write(buffers[spec.name], inputs[spec.name])
        return inputs

    def _probe(self, program, plan, buffers, best: float | None) -> tuple[list[float], float]:
        """(estimates of a whole launch from the template's probe, the probe's fraction of the
        work-groups): no estimates unless the config is hopeless by them (see ``Method.probe``)."""
        m = self.method
        if best is None or m.probe <= 0 or m.abandon <= 0 or m.abandon * best < m.probe_seconds:
            return [], 0.0
        probe = self.template.probe(plan, m.probe)
        if probe is None:
            return [], 0.0
        before = self.device.run(program, probe.before, buffers) if probe.before else 0.0
        estimates: list[float] = []
        while len(estimates) < 2:  # the first launch of a fresh program can be slow: two to judge
            estimates.append(before + self.device.run(program, (probe.launch,), buffers) / probe.fraction)
            if not self._hopeless(estimates[-1:], best):
                return [], probe.fraction
        return estimates, probe.fraction

    def _verify(self, program, plan, buffers, inputs: dict[str, np.ndarray]) -> float:
        """Run the config once on the verification inputs (already written, see ``_load``), outputs
        poisoned; raise WrongResultError unless every output matches the reference. Returns the
        launch's time (device events)."""
        _, ref = self._case()
        for spec in plan.buffers:
            if spec.role != "in":
                self.device.fill(buffers[spec.name], spec.nbytes, POISON_BYTE)
        seconds = self.device.run(program, plan.launches, buffers)
        outputs = {}
        for spec in plan.buffers:
            if spec.role == "out":
                outputs[spec.name] = np.empty(spec.shape, dtype=spec.dtype)
                self.device.read(buffers[spec.name], outputs[spec.name])
        problem = self.template.check(outputs, inputs, ref, self.shape, self.dtype)
        if problem:
            raise WrongResultError(problem)
        return seconds
