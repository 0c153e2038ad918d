"""One contract, run against every registered strategy (optuna's testing/pytest_storages.py pattern).

Every strategy, on a constrained space with failures in it: never asks for a
config twice, never asks for one outside the space of valid configs, asks for
every config exactly once before it reports the space exhausted, makes the same
choices with the same seed, and skips configs it was told about beforehand.
"""

from __future__ import annotations

import itertools
import math

import pytest

from tunesvc import search
from tunesvc.search.space import Dimension, SearchSpace
from tunesvc.types import Config, Measurement, Timing

DIMS = (Dimension("bx", (8, 16, 32, 64)), Dimension("ty", (1, 2, 4)), Dimension("vec", (1, 2, 4)), Dimension("flag", (0, 1)))


def valid(c: Config) -> bool:
    return c["bx"] * c["ty"] <= 128 and c["vec"] <= c["bx"] // 8 + 1  # a constraint that carves the grid


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    configs = [Config(dict(zip([d.name for d in DIMS], v))) for v in itertools.product(*(d.values for d in DIMS))]
    return SearchSpace(DIMS, [c for c in configs if valid(c)])


def outcome(c: Config) -> Measurement:
    """A deterministic landscape with a basin and failing corners (failures are information)."""
    if c["bx"] == 64 and c["ty"] == 2 and c["flag"] == 1:
        return Measurement(c, "build", "too many registers")
    t = 1.0 + abs(math.log2(c["bx"]) - 4) + abs(math.log2(c["ty"]) - 1) * 0.5 + (0.3 if c["vec"] == 1 else 0.0) + 0.1 * c["flag"]
    return Measurement(c, "ok", timing=Timing(t * 1e-3, t * 1e-3, t * 1e-3, 0.0, 1))


def drive(name: str, space: SearchSpace, seed: int, told=()) -> list[Config]:
    strat = search.make(name, space, seed)
    for c in told:
        strat.tell(c, outcome(c))
    asked = []
    while (c := strat.ask()) is not None:
        asked.append(c)
        strat.tell(c, outcome(c))
        assert len(asked) <= len(space), "asked for more configs than the space holds"
    return asked


@pytest.fixture(params=sorted(search.STRATEGIES))
def name(request) -> str:
    return request.param


def test_exhausts_the_space_exactly_once_and_only_valid(name, space):
    asked = drive(name, space, seed=1)
    assert len(asked) == len(set(asked)) == len(space), "repeated a config or missed one"
    assert all(c in space and valid(c) for c in asked), "proposed an invalid config"
    assert search.make(name, space, 1).ask() is not None


def test_deterministic_with_a_seed(name, space):
    assert drive(name, space, seed=7)[:25] == drive(name, space, seed=7)[:25]


def test_configs_told_beforehand_are_never_asked(name, space):
    told = list(space.configs[::5])
    asked = drive(name, space, seed=3, told=told)
    assert not set(asked) & set(told)
    assert len(asked) + len(told) == len(space)


def test_preferred_configs_are_measured_once_and_the_first_comes_first(name, space):
    """Seeds: the first is measured first; a strategy with ``seeds_first`` measures them all before
    its own proposals, one that weighs them (the ensemble) when it chooses; never one twice, never
    one outside the space."""
    strat = search.make(name, space, 2)
    seeds = [space.configs[-1], Config(bx=999, ty=1, vec=1, flag=0), space.configs[3]]  # the middle one is not in the space
    strat.prefer(seeds)
    asked = []
    while (c := strat.ask()) is not None:
        asked.append(c)
        strat.tell(c, outcome(c))
    assert asked[0] == space.configs[-1]
    if strat.seeds_first:
        assert asked[1] == space.configs[3]
    assert len(asked) == len(set(asked)) == len(space)


def test_default_strategy_is_registered():
    assert search.DEFAULT_STRATEGY in search.STRATEGIES


# ---- search quality on a smooth constrained landscape ----------------------------------------
def bowl() -> tuple[SearchSpace, dict]:
    """30 x 30 values, a corner cut off by a constraint, one basin: the optimum at (20, 7)."""
    dims = (Dimension("x", tuple(range(30))), Dimension("y", tuple(range(30))))
    configs = [Config(x=x, y=y) for x in range(30) for y in range(30) if x + y <= 45]
    return SearchSpace(dims, configs), {c: 1.0 + (c["x"] - 20) ** 2 + 2 * (c["y"] - 7) ** 2 for c in configs}


def evals_to_optimum(name: str, seed: int) -> int:
    space, time = bowl()
    strat = search.make(name, space, seed)
    for n in itertools.count(1):
        c = strat.ask()
        strat.tell(c, Measurement(c, "ok", timing=Timing(time[c], time[c], time[c], 0.0, 1)))
        if time[c] == 1.0:
            return n


@pytest.mark.parametrize("name", ["swarm", search.DEFAULT_STRATEGY])
def test_finds_the_optimum_of_a_basin_far_sooner_than_random(name):
    n_random = (len(bowl()[0]) + 1) / 2  # random search's expected draws to the single optimum: ~400
    runs = sorted(evals_to_optimum(name, seed) for seed in range(5))
    assert runs[2] < n_random / 5 and runs[-1] < n_random / 2, runs


def test_ensemble_arms_are_checked_and_each_exhausts_the_space(space):
    from tunesvc.errors import UsageError
    from tunesvc.search.ensemble import EnsembleStrategy
    from tunesvc.search.ranges import ARMS

    with pytest.raises(UsageError, match="arms"):
        EnsembleStrategy(space, 0, arms=("density", "annealing"))
    strat = EnsembleStrategy(space, 0, arms=ARMS, start=2)
    asked = []
    while (c := strat.ask()) is not None:
        asked.append(c)
        strat.tell(c, outcome(c))
    assert len(set(asked)) == len(asked) == len(space)
