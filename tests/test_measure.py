"""The measurement method on the real PoCL device: warm-up discarded, repeat until the median is
precise or a cap is hit, buffers rotated for small problems, leaders compared interleaved.

A thin proxy around the real device counts what the evaluator asks of it; every kernel still runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunesvc.measure.evaluator import Evaluator, Method, interval, precise_enough
from tunesvc.measure.drive import confirm_leaders
from tunesvc.types import Config, Measurement, Timing

SHAPE = (16, 16, 16)


class Recording:
    """The real device, with a log of every run: (kernel program, buffer set) in order."""

    def __init__(self, device):
        self._d = device
        self.runs: list[tuple[int, int]] = []

    def __getattr__(self, name):
        return getattr(self._d, name)

    def run(self, program, launches, buffers):
        self.runs.append((id(program), id(buffers["A"])))
        return self._d.run(program, launches, buffers)


@pytest.fixture
def matmul():
    from tunesvc import templates

    return templates.get("matmul")


def valid_configs(cl_device, matmul, n: int) -> list[Config]:
    """The default and n-1 more valid configs (the template's values may change; these follow)."""
    from tunesvc.templates.base import Context

    ctx = Context(SHAPE, "float32", cl_device.info)
    out = [matmul.default_config()]
    for c in matmul.all_configs():
        if len(out) == n:
            break
        if c not in out and matmul.is_valid(c, ctx):
            out.append(c)
    return out


def test_interval_and_precision_rule():
    assert interval(Timing(1.0, 1.0, 1.0, 0.0, 5)) == (1.0, 1.0)
    lo, hi = interval(Timing(1.0, 0.8, 1.3, 0.2, 16))
    assert lo < 1.0 < hi and math.isclose(hi - lo, 2 * 1.57 * 0.2 / 4)
    assert precise_enough([1.0, 1.001, 0.999, 1.0, 1.0], Method(precision=0.02))
    assert not precise_enough([1.0, 1.5, 0.7, 1.2, 0.9], Method(precision=0.02))


def test_warmup_is_discarded_and_runs_stop_at_the_cap(cl_device, matmul):
    dev = Recording(cl_device)
    # precision 0 is never reached: the method runs up to max_runs.
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=3, runs=4, max_runs=9, precision=0.0, max_seconds=60))
    m = ev.evaluate(matmul.default_config())
    assert m.ok and m.timing.count == 9
    first = len(dev.runs)
    # The first config of a process gets a longer warm-up (the driver's threads wake up)...
    assert first >= 1 + 3 + 9
    dev.runs.clear()
    assert ev.evaluate(matmul.default_config()).timing.count == 9
    assert len(dev.runs) == 1 + 3 + 9  # ...later ones: verification, warm-up (not timed), timed runs
    # precision inf is reached at once: the method stops at the minimum.
    dev.runs.clear()
    ev._warm = True  # as if it had timed a config before
    ev.method = Method(warmup=1, runs=4, max_runs=50, precision=math.inf)
    assert ev.evaluate(matmul.default_config()).timing.count == 4
    assert len(dev.runs) == 1 + 1 + 4


def test_timing_records_median_min_iqr_and_count(cl_device, matmul):
    m = Evaluator(cl_device, matmul, SHAPE, "float32", Method(runs=7, max_runs=7)).evaluate(matmul.default_config())
    t = m.timing
    assert t.count == 7 and 0 < t.min <= t.median <= t.max and t.iqr >= 0


def test_small_problems_rotate_buffers_large_ones_do_not(cl_device, matmul):
    dev = Recording(cl_device)
    small = sum(b.nbytes for b in matmul.plan(matmul.default_config(), SHAPE, "float32").buffers)
    method = Method(warmup=0, runs=12, max_runs=12, precision=math.inf, rotate_bytes=4 * small)  # warmup 0: none at all
    ev = Evaluator(dev, matmul, SHAPE, "float32", method)
    assert ev.evaluate(matmul.default_config()).ok
    timed = [buf for _, buf in dev.runs[1:]]
    assert len(set(timed)) == 4  # four copies, used in turn
    assert timed[:4] != timed[4:8][::-1] and timed[:4] == timed[4:8]
    # The copies hold real inputs, not garbage that could be denormal or NaN.
    a = np.empty(SHAPE[:1] + SHAPE[2:], dtype=np.float32)
    cl_device.read(ev._sets[2][("A", a.nbytes)], a)
    assert np.array_equal(a, ev._timing_inputs["A"])

    dev.runs.clear()
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=0, runs=6, max_runs=6, precision=math.inf, rotate_bytes=small))
    ev.evaluate(matmul.default_config())
    assert len({buf for _, buf in dev.runs}) == 1  # as big as the rotation target: no copies


def test_compare_interleaves(cl_device, matmul):
    dev = Recording(cl_device)
    configs = valid_configs(cl_device, matmul, 2)
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=1, confirm_rounds=6))
    out = ev.compare(configs)
    assert [m.config for m in out] == configs and all(m.ok and m.timing.count == 6 for m in out)
    programs = [p for p, _ in dev.runs[2:]]  # after one warm-up each
    assert len(set(programs)) == 2
    # Round-robin: never more than two runs of one program in a row (the order rotates each round).
    assert all(not (programs[i] == programs[i + 1] == programs[i + 2]) for i in range(len(programs) - 2))


def fake(config: Config, median: float, iqr: float) -> Measurement:
    return Measurement(config, "ok", timing=Timing(median, median - iqr, median + iqr, iqr, 9), compile_seconds=0.5)


def test_leaders_are_remeasured_only_when_their_intervals_overlap(cl_device, matmul):
    ev = Evaluator(cl_device, matmul, SHAPE, "float32", Method(confirm=3, confirm_rounds=4))
    a, b, c, d = valid_configs(cl_device, matmul, 4)
    # b's interval overlaps a's, c is far behind; a failed config never takes part.
    stats = [fake(a, 1.0, 0.1), fake(b, 1.05, 0.1), fake(c, 5.0, 0.1), Measurement(d, "build", "x")]
    fresh = confirm_leaders(ev, stats, ev.method)
    assert [m.config for m in fresh] == [a, b]
    assert all(m.ok and m.timing.count == 4 and m.compile_seconds == 0.5 for m in fresh)
    # Clearly separated: nothing to re-measure.
    assert confirm_leaders(ev, [fake(a, 1.0, 0.01), fake(b, 2.0, 0.01)], ev.method) == []
