"""The replay backend, the figures of Willemsen et al. 2024, transfer seeds and `tunesvc replay`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tunesvc.cli import main
from tunesvc.replay.runner import RecordedRunner, to_records
from tunesvc.replay.files import load
from tunesvc.replay.score import (default_budget, evals_to_reach, expected_random_best, expected_random_evals,
                            performance_score, replay, run_once)
from tunesvc.search.transfer import seed_configs
from tunesvc.types import Config, Fingerprint, Measurement, Record, Timing

DATA = Path(__file__).parent / "data"
KT = DATA / "pnpoly_RTX_3090_small.json.gz"
T4 = DATA / "convolution_A100_T4.json"
FIELDS = {"file", "strategy", "runs", "n_valid", "optimum", "expected_random_evals_to_5pct", "median_evals_to_5pct",
          "fraction_reached", "best_over_optimum", "score"}


@pytest.fixture(scope="module")
def device():
    return RecordedRunner(KT)


# ---- the backend --------------------------------------------------------------------------
def test_replay_device_answers_from_the_file(device):
    rec = device.recorded
    ok, bad = rec.valid[5], rec.failures[0]
    device.reset()
    m = device.evaluate(ok.config)
    assert m.ok and m.time == ok.time and m.compile_seconds == ok.compile_seconds
    assert device.clock == pytest.approx(ok.compile_seconds + ok.benchmark_seconds)
    f = device.evaluate(bad.config)
    assert f.status == "runtime" and f.reason == "RuntimeFailedConfig" and f.time == float("inf")
    assert device.clock == pytest.approx(ok.compile_seconds + ok.benchmark_seconds + bad.compile_seconds + bad.benchmark_seconds)
    absent = ok.config.replace(block_size_x=96)  # a value the file never ran
    assert device.evaluate(absent).status == "constraint" and device.evaluations == 2
    assert len(device.space) == len(rec.configs) and absent not in device.space
    assert device.info.fingerprint.vendor == "NVIDIA" and device.info.fingerprint.backend == "replay"  # as imported


# ---- figures ------------------------------------------------------------------------------
def test_expected_random_best_is_exact():
    times = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 1.5])
    want = [np.mean([min(c) for c in itertools.combinations(times, m)]) for m in range(1, len(times) + 1)]
    assert expected_random_best(times, len(times)) == pytest.approx(want, rel=1e-12)


def test_expected_random_evals_and_default_budget():
    times = np.array([1.0, 1.04, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])  # 2 of 9 within 5%
    assert expected_random_evals(times) == pytest.approx(10 / 3)
    assert default_budget(times) == 9  # 4 * 10/3 = 14, capped at the space
    assert default_budget(np.arange(1.0, 5001.0)) == 1000


def test_score_is_zero_for_random_order_and_one_for_the_optimum_first():
    times = np.array([5.0, 2.0, 7.0, 1.0])
    every_order = [list(p) for p in itertools.permutations(times)]
    assert performance_score(every_order, times, 4) == pytest.approx(0.0, abs=1e-12)
    assert performance_score([[1.0, 7.0, 5.0]], times, 3) == pytest.approx(1.0)
    worst_first = performance_score([[7.0, 5.0, 2.0]], times, 3)
    assert worst_first < 0


def test_evals_to_reach():
    assert evals_to_reach([3.0, 2.0, 1.02, 1.0], 1.05, 10) == 3
    assert evals_to_reach([3.0, 2.0], 1.05, 10) == 10


# ---- runs ---------------------------------------------------------------------------------
def test_run_never_repeats_and_counts_only_feasible_evaluations(device):
    run = run_once(device, "random", 200, seed=3)
    assert len(run.times) == 200 and run.evaluations >= 200
    assert device.clock == run.simulated_seconds > 0
    recorded = sorted(c.time for c in device.recorded.valid)
    assert all(t in recorded for t in run.times)


def test_run_stops_when_the_space_is_exhausted(device):
    run = run_once(device, "grid", 10_000, seed=0)
    assert sorted(run.times) == sorted(c.time for c in device.recorded.valid)
    assert run.evaluations == len(device.recorded.configs)


def test_replay_report(device):
    rep = replay(device, "random", budget=50, repeats=2, seed=1)
    assert rep.n_valid == 941 and rep.budget == 50 and len(rep.runs) == 2
    assert rep.optimum == device.recorded.optimum
    assert 1.0 <= rep.best_over_optimum and 0.0 <= rep.fraction_reached <= 1.0
    assert set(rep.to_dict()) == FIELDS
    again = replay(device, "random", budget=50, repeats=2, seed=1)
    assert again.runs == rep.runs  # seeded: the same runs


def test_seeds_are_measured_first(device):
    best = min(device.recorded.valid, key=lambda c: c.time)
    rep = replay(device, "random", budget=5, repeats=2, seeds=[best.config])
    assert rep.median_evals_to_5pct == 1 and rep.fraction_reached == 1
    assert all(r.times[0] == best.time for r in rep.runs)


# ---- transfer -----------------------------------------------------------------------------
def _record(fp, shape, config, t):
    return Record(fp, "k", "h", "float32", shape, Measurement(Config(config), "ok", timing=Timing(t, t, t, 0, 1)))


def test_seed_configs_rank_related_problems(device):
    space = device.space
    c = [r.config for r in device.recorded.valid[:6]]
    target = Fingerprint("cuda", "nvidia", "gpu", "sm_86", "RTX 3090", "535")
    sibling = Fingerprint("cuda", "nvidia", "gpu", "sm_86", "RTX 3090", "550")  # same family, newer driver
    cousin = Fingerprint("cuda", "nvidia", "gpu", "sm_75", "RTX 2080 Ti", "535")
    stranger = Fingerprint("hip", "amd", "gpu", "gfx90a", "MI250X", "6.0")
    records = [
        _record(stranger, (100,), c[0], 1.0),
        _record(cousin, (100,), c[1], 2.0), _record(cousin, (100,), c[2], 1.0),
        _record(sibling, (1000,), c[3], 5.0),
        _record(sibling, (120,), c[4], 9.0),
        _record(target, (100,), c[5], 0.1),  # the problem itself: already known, not a seed
        _record(sibling, (100,), {"between_method": 99}, 0.01),  # not in the space
    ]
    seeds = seed_configs(records, target, (100,), space, limit=10)
    # best of each problem, most related first (family at the nearest shape, ..., vendor, any), then the second best
    assert seeds == [c[4], c[3], c[2], c[0], c[1]]
    assert seed_configs(records, target, (100,), space, limit=2) == [c[4], c[3]]


def test_transfer_from_another_recording_finds_its_optimum_first():
    """The T4 and the cache file are one run: seeded by one, the other's optimum comes first."""
    rec = load(T4)
    other = RecordedRunner(rec)
    seeds = seed_configs(to_records(rec), Fingerprint("replay", "nvidia", "gpu", "", "A100 again", ""), (), other.space)
    assert seeds[0] == min(rec.valid, key=lambda c: c.time).config
    rep = replay(other, "random", budget=3, repeats=1, seeds=seeds)
    assert rep.median_evals_to_5pct == 1


# ---- the command --------------------------------------------------------------------------
def test_cli_json_fields():
    res = CliRunner().invoke(main, ["replay", str(KT), str(T4), "--strategy", "random", "--budget", "20", "--repeats", "2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    out = doc["reports"]
    assert doc["schema_version"] == 1 and [o["file"] for o in out] == [KT.name, T4.name]
    for o in out:  # the times in seconds, said in their names
        assert set(o) == FIELDS - {"runs", "optimum"} | {"run_times_s", "optimum_s"} and o["strategy"] == "random"
        assert len(o["run_times_s"]) == 2 and all(len(r) == 20 for r in o["run_times_s"])
        # anyone can recompute the figures from the runs
        best = [min(r) for r in o["run_times_s"]]
        assert o["best_over_optimum"] == pytest.approx(np.mean(best) / o["optimum_s"])


def test_cli_table_and_transfer():
    res = CliRunner().invoke(main, ["replay", str(KT), "--strategy", "random", "--budget", "10", "--repeats", "1",
                                    "--transfer", str(KT)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:3] == ["file", "strategy", "valid"] and KT.name in lines[2]


@pytest.mark.parametrize("args, message", [
    (["nope.json"], "no such file"),
    ([str(KT), "--budget", "0"], "--budget must be at least 1"),
    ([str(KT), "--repeats", "0"], "--repeats must be at least 1"),
    ([str(KT), "--strategy", "magic"], "unknown strategy 'magic'"),
])
def test_cli_bad_input_exits_2_with_one_line(args, message):
    res = CliRunner().invoke(main, ["replay", *args])
    assert res.exit_code == 2
    assert message in res.output and len(res.output.strip().splitlines()) == 1


def test_seeds_from_a_real_store(tmp_path):
    """Transfer as live tuning uses it: records of a sibling device in a SQLite store seed the search."""
    from dataclasses import replace

    from tunesvc.cache import Store
    from tunesvc.search.transfer import seeds_from_store
    from tunesvc.types import Problem

    rec = load(KT)
    store = Store(tmp_path / "t.db")
    store.put_many(to_records(rec))
    target = Problem(rec.kernel_name, rec.space_hash, rec.problem_size, "float32",
                     Fingerprint("replay", "nvidia", "gpu", "", "RTX 3080", ""))
    space = RecordedRunner(rec).space
    seeds = seeds_from_store(store, target, space, limit=3)
    fastest = sorted(rec.valid, key=lambda c: c.time)[:3]
    assert seeds == [c.config for c in fastest]
    # records of another version of the template (an earlier source): seeds too, projected the same way
    assert seeds_from_store(store, replace(target, template_hash="other-hash"), space, limit=3) == seeds


def test_after_a_template_change_the_old_winner_of_the_problem_itself_is_the_first_seed(tmp_path):
    """Records of an earlier source hash: the problem's own old winner first (a parameter added
    since takes its default), then the current version's neighbours; the current version's own
    records of the problem are known measurements, never seeds."""
    from dataclasses import replace

    from tunesvc.cache import Store
    from tunesvc.search.space import Dimension, SearchSpace
    from tunesvc.search.transfer import seeds_from_store
    from tunesvc.types import Config, Measurement, Problem, Record, Timing

    fp = Fingerprint("opencl", "amd", "cpu", "x86", "EPYC", "PoCL 3.1")
    space = SearchSpace((Dimension("a", (1, 2, 4)), Dimension("new", (0, 1))),
                        [Config(a=a, new=n) for a in (1, 2, 4) for n in (0, 1)])
    now = Problem("k", "h2", (64,), "float32", fp)

    def rec(problem, config, t):
        return Record(problem.device, problem.template, problem.template_hash, problem.dtype, problem.shape,
                      Measurement(Config(config), "ok", timing=Timing(t, t, t, 0.0, 1)))

    store = Store(tmp_path / "t.db")
    store.put_many([rec(replace(now, template_hash="h1"), {"a": 4}, 1.0),  # the old version had no "new"
                    rec(replace(now, template_hash="h1"), {"a": 1}, 3.0),
                    rec(replace(now, shape=(128,)), {"a": 2, "new": 1}, 1.0),  # a neighbour, this version
                    rec(now, {"a": 1, "new": 1}, 0.5)])  # this problem, this version: known, not a seed
    seeds = seeds_from_store(store, now, space, limit=4, defaults={"a": 1, "new": 0})
    assert seeds == [Config(a=4, new=0), Config(a=2, new=1), Config(a=1, new=0)]
    assert seeds_from_store(store, now, space, limit=4) == [Config(a=2, new=1)]  # no defaults: the old ones do not project
