"""The measurement method on the real PoCL device: warm-up discarded, repeat until the median is
precise or a cap is hit, buffers rotated for small problems, leaders compared interleaved.

A thin proxy around the real device counts what the evaluator asks of it; every kernel still runs.
"""

from __future__ import annotations

import dataclasses
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


# ---- early abandon of hopeless candidates ----------------------------------------------------
def test_a_hopeless_config_is_abandoned_on_its_verification_launch(cl_device, matmul):
    """Told a best time far below its own, a config is verified and timed no further: the
    verification launch (timed by device events like any other) is its one sample."""
    from tunesvc.measure.evaluator import abandoned

    dev = Recording(cl_device)
    # early_seconds 0: a 16³ launch is long enough to judge by (by default it is not: see below)
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=1, runs=5, max_runs=9, precision=0.0, max_seconds=60,
                                                         early_seconds=0.0))
    ev._warm = True  # as if it had timed a config before: one warm-up launch
    m = ev.evaluate(matmul.default_config(), best=1e-12)
    assert m.ok and abandoned(m) and m.extra["abandoned"] is True
    assert m.reason.startswith("abandoned: first launch") and "x the best so far" in m.reason
    assert len(dev.runs) == 1 and m.timing.count == 1  # the verification launch, nothing more
    assert m.gflops is not None and m.time > 0


def test_a_short_verification_launch_does_not_judge(cl_device, matmul):
    """Under early_seconds (50 ms by default) a first launch is too noisy to judge by: the
    warm-up launch decides, at the one-launch limit."""
    from tunesvc.measure.evaluator import abandoned

    dev = Recording(cl_device)
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=1, runs=5, max_runs=9, precision=0.0, max_seconds=60))
    ev._warm = True
    m = ev.evaluate(matmul.default_config(), best=1e-12)
    assert abandoned(m) and len(dev.runs) == 2 and m.timing.count == 1  # verification, then the warm-up judged
    dev = Scripted(cl_device, [0.02, 0.02])  # 20 ms twice, 2x a best of 10 ms: under the 3x, and too short for 1.5x
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=1, runs=5, max_runs=9, precision=0.0, max_seconds=60))
    ev._warm = True
    assert not abandoned(ev.evaluate(matmul.default_config(), best=0.01))


class SlowAfterFirst(Recording):
    """The real device, whose every launch after the first reports ``factor`` times its time
    (a config whose verification launch looked fine and whose warm-up does not)."""

    def __init__(self, device, factor: float):
        super().__init__(device)
        self.factor = factor

    def run(self, program, launches, buffers):
        t = super().run(program, launches, buffers)
        return t if len(self.runs) == 1 else t * self.factor


def test_a_slow_warmup_still_abandons_after_a_fair_verification_launch(cl_device, matmul):
    from tunesvc.measure.evaluator import abandoned

    # A 16³ launch takes microseconds: 1 s is far above the verification launch, and 1e7 times any
    # launch is far above 3 s.
    dev = SlowAfterFirst(cl_device, 1e7)
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=1, runs=5, max_runs=9, precision=0.0, max_seconds=60))
    ev._warm = True
    m = ev.evaluate(matmul.default_config(), best=1.0)
    assert abandoned(m) and len(dev.runs) == 2 and m.timing.count == 1 and m.time > 3.0


class Scripted(Recording):
    """The real device running every launch, reporting the times of a script instead (the last
    one again once the script is spent): the launch times that decide are then exact."""

    def __init__(self, device, times):
        super().__init__(device)
        self.times = list(times)

    def run(self, program, launches, buffers):
        super().run(program, launches, buffers)
        return self.times[min(len(self.runs), len(self.times)) - 1]


def test_two_launches_both_half_again_slower_stop_the_timing(cl_device, matmul):
    """Verification 2.0 s and warm-up 2.0 s against a best of 1.0: under the 3x of one launch,
    over the 1.5x of two, so it stops there; a warm-up back near the best is timed in full
    (slow_runs 0: with it a 2 s verification launch would be the warm-up, tested below)."""
    from tunesvc.measure.evaluator import abandoned

    method = Method(warmup=1, runs=5, max_runs=9, precision=0.0, max_seconds=60, slow_runs=0)
    dev = Scripted(cl_device, [2.0, 2.0])
    ev = Evaluator(dev, matmul, SHAPE, "float32", method)
    ev._warm = True
    m = ev.evaluate(matmul.default_config(), best=1.0)
    assert abandoned(m) and len(dev.runs) == 2 and m.timing.count == 2 and m.time == 2.0
    assert m.reason.startswith("abandoned: first 2 launches 2.0x the best so far")
    dev = Scripted(cl_device, [2.0, 1.2])
    ev = Evaluator(dev, matmul, SHAPE, "float32", method)
    ev._warm = True
    m = ev.evaluate(matmul.default_config(), best=1.0)
    assert not abandoned(m) and m.timing.count >= 5  # the full timing (identical times: precise at 5)
    dev = Scripted(cl_device, [2.0, 2.0])
    ev = Evaluator(dev, matmul, SHAPE, "float32", dataclasses.replace(method, abandon_two=0.0))
    ev._warm = True
    assert not abandoned(ev.evaluate(matmul.default_config(), best=1.0))  # the rule off


def test_a_long_verification_launch_is_the_warm_up_and_three_runs_do(cl_device, matmul):
    """A verification launch of 2 s (slow_seconds 1 s): no warm-up, slow_runs (3) timed launches
    instead of runs (5), with no best to judge by; off (slow_runs 0), the warm-up and all five."""
    method = Method(warmup=1, runs=5, max_runs=9, precision=0.0, max_seconds=60)
    dev = Scripted(cl_device, [2.0])
    ev = Evaluator(dev, matmul, SHAPE, "float32", method)
    ev._warm = True
    m = ev.evaluate(matmul.default_config())
    assert m.ok and m.timing.count == 3 and len(dev.runs) == 4 and m.time == 2.0
    dev = Scripted(cl_device, [2.0])
    ev = Evaluator(dev, matmul, SHAPE, "float32", dataclasses.replace(method, slow_runs=0))
    ev._warm = True
    m = ev.evaluate(matmul.default_config())
    assert m.ok and m.timing.count == 5 and len(dev.runs) == 7
    dev = Scripted(cl_device, [0.5])  # under slow_seconds: the warm-up and five runs
    ev = Evaluator(dev, matmul, SHAPE, "float32", method)
    ev._warm = True
    assert ev.evaluate(matmul.default_config()).timing.count == 5 and len(dev.runs) == 7
    dev = Scripted(cl_device, [3.0, 3.0, 1.0])  # no warm-up: the first timed launch is judged
    ev = Evaluator(dev, matmul, SHAPE, "float32", method)
    ev._warm = True
    m = ev.evaluate(matmul.default_config(), best=1.0)
    assert m.reason.startswith("abandoned: first 2 launches") and len(dev.runs) == 2


def test_compare_takes_fewer_rounds_where_they_would_be_long(cl_device, matmul):
    """Two leaders of 1 s a launch, confirm_seconds 4: rounds stop at max(runs, 4 s / 2 s)."""
    configs = valid_configs(cl_device, matmul, 2)
    dev = Scripted(cl_device, [1.0])
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=1, runs=3, confirm_rounds=31, confirm_seconds=4.0))
    out = ev.compare(configs)
    assert all(m.ok and m.timing.count == 3 for m in out)
    dev = Scripted(cl_device, [2.0])  # slow launches (slow_seconds 1 s): slow_runs rounds are enough
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=1, runs=5, confirm_rounds=31, confirm_seconds=4.0))
    assert all(m.ok and m.timing.count == 3 for m in ev.compare(configs))
    dev = Scripted(cl_device, [1e-6])  # short launches: every round
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=1, runs=3, confirm_rounds=31, confirm_seconds=4.0))
    assert all(m.timing.count == 31 for m in ev.compare(configs))


def test_the_verification_case_is_made_once_and_shared(cl_device, matmul):
    """Inputs and float64 reference (and its error scale) are made for the first candidate and kept:
    the next one is checked against the same arrays, its outputs poisoned afresh."""
    ev = Evaluator(cl_device, matmul, SHAPE, "float32", Method.plain(1))
    a, b = valid_configs(cl_device, matmul, 2)
    assert ev.evaluate(a).ok
    inputs, ref = ev._case()
    scale = ref.derived(("scale", "C"), lambda: None)
    assert scale is not None and scale.shape == ref["C"].shape  # the check remembered it
    assert ev.evaluate(b).ok
    assert ev._case()[0] is inputs and ev._case()[1] is ref


def test_a_config_near_the_best_is_timed_in_full(cl_device, matmul):
    from tunesvc.measure.evaluator import abandoned

    dev = Recording(cl_device)
    method = Method(warmup=1, runs=5, max_runs=9, precision=0.0, max_seconds=60)
    ev = Evaluator(dev, matmul, SHAPE, "float32", method)
    ev._warm = True
    m = ev.evaluate(matmul.default_config(), best=10.0)  # the best is far slower: nothing to abandon
    assert m.ok and not abandoned(m) and m.reason == "" and m.timing.count == 9
    dev.runs.clear()
    off = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=1, runs=5, max_runs=9, precision=0.0, abandon=0.0))
    off._warm = True
    assert off.evaluate(matmul.default_config(), best=1e-12).timing.count == 9  # abandon 0: never
    assert Method.plain().abandon == 0


def test_without_a_warmup_the_first_timed_launch_decides(cl_device, matmul):
    from tunesvc.measure.evaluator import abandoned

    dev = SlowAfterFirst(cl_device, 1e7)
    ev = Evaluator(dev, matmul, SHAPE, "float32", Method(warmup=0, runs=5, max_runs=9, precision=0.0))
    m = ev.evaluate(matmul.default_config(), best=1.0)
    assert abandoned(m) and m.timing.count == 1 and len(dev.runs) == 1 + 1


def test_abandoned_survives_the_worker_pipe_and_the_store(cl_info, tmp_path):
    """Through the isolated worker (the best goes down the pipe) and back out of the database, an
    abandoned config stays ok, and says it was abandoned."""
    from tunesvc import templates
    from tunesvc.cache import Store
    from tunesvc.measure.evaluator import abandoned
    from tunesvc.measure.worker import Job, Worker
    from tunesvc.types import Problem, Record

    tpl = templates.get("matmul")
    worker = Worker(Job(templates.ref(tpl), SHAPE, "float32", cl_info), timeout=60)
    try:
        m = worker.evaluate(tpl.default_config(), best=1e-12)
        kept = worker.evaluate(tpl.default_config())
    finally:
        worker.close()
    assert m.ok and abandoned(m) and not abandoned(kept) and kept.timing.count >= 5
    problem = Problem(tpl.name, tpl.source_hash, SHAPE, "float32", cl_info.fingerprint)
    store = Store(tmp_path / "a.db")
    store.put(Record.of(problem, m))
    back = store.measurements(problem)[m.config]
    store.close()
    assert back.ok and abandoned(back) and not back.extra


def test_drive_tells_the_runner_the_best_so_far():
    """The loop passes best() with every config; without it, the runner gets the config alone
    (a recorded space's runner takes nothing more)."""
    from tunesvc.measure.drive import drive
    from tunesvc.search.simple import GridStrategy
    from tunesvc.search.space import Dimension, SearchSpace

    space = SearchSpace([Dimension("x", (1, 2, 3))], [Config(x=v) for v in (1, 2, 3)])
    seen = []

    class Runner:
        def evaluate(self, config, **kw):
            seen.append(kw.get("best", "none"))
            t = float(config["x"])
            return Measurement(config, "ok", timing=Timing(t, t, t, 0.0, 1))

    bests = iter([None, 1.0, 1.0])
    drive(GridStrategy(space, 0), Runner(), lambda: None, lambda m: None, best=lambda: next(bests))
    assert seen == [None, 1.0, 1.0]
    seen.clear()
    drive(GridStrategy(space, 0), Runner(), lambda: None, lambda m: None)
    assert seen == ["none"] * 3


def test_tune_tells_its_runner_the_best_so_far(cl_info, tmp_path):
    """tune() plumbs the best time so far to the runner: with a threshold of 1.0 every config
    slower than the best so far is abandoned, and the best itself never is."""
    import dataclasses

    import tunesvc
    from tunesvc.measure.evaluator import abandoned

    method = dataclasses.replace(Method(), abandon=1.0, confirm=0, max_seconds=0.05)
    r = tunesvc.tune("matmul", (32, 32, 32), device=cl_info.id, db=tmp_path / "t.db", trials=8, seed=1,
                     strategy="random", method=method, isolate=False)
    flags = [abandoned(m) for m in r.measured if m.ok]
    assert any(flags) and not abandoned(r.best)
    assert r.default is not None and not abandoned(r.default)  # measured first, with no best to beat


# ---- the probe: a slice of the grid before the verification launch ---------------------------
PROBED = (256, 256, 64)  # 32 x 64 work-groups for the default config: a probe of 1/8 is 8 of 64 rows


class Launches(Scripted):
    """Scripted times, and a log of the launches of every run."""

    def __init__(self, device, times):
        super().__init__(device, times)
        self.launched: list[tuple] = []

    def run(self, program, launches, buffers):
        self.launched.append(tuple(launches))
        return super().run(program, launches, buffers)


def test_a_probe_of_the_grid_abandons_a_hopeless_config_before_its_verification(cl_device, matmul):
    """A best of 50 ms (3x it is over probe_seconds): pack_b runs in full, then an eighth of the
    matmul's work-groups twice; both estimates over 3x the best stop the config unverified."""
    from tunesvc.measure.evaluator import abandoned

    config = matmul.default_config()
    assert config["PACKB"] == 1
    full = matmul.plan(config, PROBED, "float32").launches
    dev = Launches(cl_device, [0.01, 0.1, 0.1])  # pack_b 10 ms, then probes of 0.1 s: 0.81 s estimated
    ev = Evaluator(dev, matmul, PROBED, "float32", Method())
    m = ev.evaluate(config, best=0.05)
    assert m.ok and abandoned(m) and m.extra["unverified"] and m.extra["probe"] == 0.125
    assert m.reason.startswith("abandoned before verification: 2 probes of 0.125 of the work-groups estimate 16.2x")
    assert m.timing.count == 2 and m.time == pytest.approx(0.81)
    assert dev.launched[0] == full[:1]  # pack_b in full
    probe = dev.launched[1][0]
    assert len(dev.launched) == 3 and dev.launched[2] == dev.launched[1]  # no verification launch
    assert probe.kernel == "matmul" and probe.global_size[0] == full[1].global_size[0]
    assert probe.global_size[1] * 8 == full[1].global_size[1]


def test_a_probe_under_the_limit_once_lets_the_config_be_verified(cl_device, matmul):
    from tunesvc.measure.evaluator import abandoned

    config = matmul.default_config()
    # 0.81 s, then a warm probe at 0.01 + 8 x 0.005 = 50 ms: not hopeless; verified and timed.
    dev = Launches(cl_device, [0.01, 0.1, 0.005, 0.06])
    m = Evaluator(dev, matmul, PROBED, "float32", Method()).evaluate(config, best=0.05)
    assert m.ok and not abandoned(m) and m.timing.count >= 3
    assert dev.launched[3] == matmul.plan(config, PROBED, "float32").launches  # the verification launch
    # Under probe_seconds (3 x 10 ms is 30 ms): no probe, the verification launch first.
    dev = Launches(cl_device, [1.0])
    m = Evaluator(dev, matmul, PROBED, "float32", Method()).evaluate(config, best=0.01)
    assert abandoned(m) and not m.extra.get("unverified") and len(dev.launched) == 1
    # Off, and never without a best.
    dev = Launches(cl_device, [1.0])
    Evaluator(dev, matmul, PROBED, "float32", Method(probe=0.0)).evaluate(config, best=0.05)
    assert len(dev.launched[0]) == 2
    dev = Launches(cl_device, [1.0])
    assert Evaluator(dev, matmul, PROBED, "float32", Method()).evaluate(config).ok and len(dev.launched[0]) == 2
    assert Method.plain().probe == 0


@pytest.mark.parametrize("name, shape", [("matmul", (200, 136, 40)), ("attention", (1, 4, 2, 20, 37, 16))])
def test_a_probe_writes_only_the_first_outputs_and_those_right(cl_infos, name, shape):
    """The templates' side of the contract, on every real device: the probe's launches, run on
    real inputs, write a part of the output that matches the float64 reference, and nothing else
    (the rest still the poison)."""
    from tunesvc import templates
    from tunesvc.devices import open_device
    from tunesvc.templates.base import Context

    tpl = templates.get(name)
    for info in cl_infos:
        cl_device = open_device(info)
        probed = sum(_probe_is_right(cl_device, tpl, shape, config)
                     for config in tpl.valid_configs(Context(shape, "float32", info))[::97][:12])
        assert probed >= 3, info.name


def _probe_is_right(cl_device, tpl, shape, config) -> bool:
    """Whether the config has a probe (asserting that it is right where it has)."""
    plan = tpl.plan(config, shape, "float32")
    probe = tpl.probe(plan, 0.125)
    if probe is None:
        return False
    ev = Evaluator(cl_device, tpl, shape, "float32", Method())
    buffers = ev._buffers(plan)
    inputs = ev._load(plan, buffers)
    out = plan.buffers[[b.role for b in plan.buffers].index("out")]
    cl_device.fill(buffers[out.name], out.nbytes, 0xFF)
    program = cl_device.build(ev.source, plan.defines, tpl.kernel_names)
    if probe.before:
        cl_device.run(program, probe.before, buffers)
    cl_device.run(program, (probe.launch,), buffers)
    got = np.empty(out.shape, out.dtype)
    cl_device.read(buffers[out.name], got)
    want = tpl.reference(inputs, shape)[out.name]
    written = np.isfinite(got)
    if tpl.name == "attention" and config["SPLIT"] > 1:
        assert not written.any()  # the combining pass writes O, and the probe leaves it out
        return True
    assert written.any() and not written.all(), config
    assert np.allclose(got[written], want[written], rtol=1e-4, atol=1e-4), config
    return True
