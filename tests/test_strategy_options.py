"""A strategy's own settings from the CLI and the Python API (``--strategy-option KEY=VALUE``):
listed by ``tunesvc strategies``, checked before anything runs, and reaching the search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tunesvc.cli import main
from tunesvc.search.ensemble import DEFAULTS
from tunesvc.cache import Store

RECORDED = Path(__file__).parent / "data" / "pnpoly_RTX_3090_small.json.gz"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_strategies_lists_each_setting_with_its_default():
    r = run("strategies")
    assert r.exit_code == 0 and "ensemble  (default)" in r.output
    assert f"    polish={DEFAULTS['polish']}" in r.output and '    arms=["density", "local", "swarm", "hop"]' in r.output
    data = json.loads(run("strategies", "--json").output)
    ensemble = next(s for s in data["strategies"] if s["name"] == "ensemble")
    assert data["default"] == "ensemble" and ensemble["settings"]["patience"] == DEFAULTS["patience"]
    assert "(no settings)" in run("strategies", "random").output
    bad = run("strategies", "annealing")
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "unknown strategy 'annealing'" in bad.output


@pytest.mark.parametrize("option, message", [
    ("polsh=0.2", "has no setting 'polsh'; its settings: arms,"),
    ("polish=abc", "setting 'polish' takes a number (default 0.0); got \"abc\""),
    ("patience=2.5", "setting 'patience' takes a whole number (default 50); got 2.5"),
    ("polish", "--strategy-option takes KEY=VALUE"),
    ("arms=density", "setting 'arms' takes a JSON list"),
    ("polish=1.5", "setting 'polish' must be a number in [0, 1); got 1.5"),
    ('arms=["density","annealing"]', "setting 'arms' must be a JSON list of distinct arms among density,"),
    ('prior={"density": -1}', "setting 'prior' must be a JSON object of arms"),
])
def test_a_bad_strategy_option_is_one_line_and_exit_2_and_stores_nothing(db_path, option, message):
    r = run("tune", "matmul", "--shape", "24x40x16", "--trials", 2, "--strategy-option", option, "--db", db_path)
    assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, r.output
    assert not db_path.exists() or Store(db_path).count() == 0


def test_a_setting_for_another_strategy_is_refused(db_path):
    r = run("tune", "matmul", "--shape", "24x40x16", "--strategy", "random", "--strategy-option", "polish=0.2")
    assert r.exit_code == 2 and "strategy 'random' has no setting 'polish'; its settings: none" in r.output


def test_the_settings_reach_the_search(db_path, cl_info):
    from tunesvc.search.space import SearchSpace
    from tunesvc.tuning.options import SearchOptions
    from tunesvc.tuning.tuner import _open_search, resolve, tune

    target = resolve("matmul", "24x40x16", device=cl_info.id)
    options = SearchOptions(strategy_options={"polish": 0.25, "arms": ["local", "density"], "start": 3})
    search, _, _ = _open_search(target, SearchSpace.from_template(target.template, target.context),
                                options, db_path)
    strategy = search.strategy
    assert (strategy.polish, strategy.arms[:2], strategy.start) == (0.25, ("local", "density"), 3)
    search.close()
    result = tune("matmul", (24, 40, 16), device=cl_info.id, db=db_path, trials=4,
                  strategy_options={"arms": ["local"], "start": 2, "polish": 0.5})
    assert len(result.measured) == 4 and result.best.ok
    r = run("tune", "matmul", "--shape", "24x40x16", "--trials", 2, "--device", cl_info.id,
            "--strategy-option", 'arms=["local"]', "--strategy-option", "start=2", "--db", db_path)
    assert r.exit_code == 0 and "2 new trials" in r.output, r.output


def test_replay_takes_the_settings_and_they_change_the_runs():
    def times(*options):
        args = [f"--strategy-option={o}" for o in options]
        r = run("replay", RECORDED, "--repeats", 2, "--seed", 4, "--json", *args)
        assert r.exit_code == 0, r.output
        return json.loads(r.output)["reports"][0]["run_times_s"]

    shipped = times()
    assert times() == shipped  # the same seeds: the same runs
    assert times('arms=["local"]', "start=2", 'design="random"') != shipped
    bad = run("replay", RECORDED, "--strategy-option", "gamma=high")
    assert bad.exit_code == 2 and "setting 'gamma' takes a number" in bad.output


@pytest.mark.parametrize("strategy, setting", [
    *[("ensemble", s) for s in ({"ring": "nearest"}, {"arms": ("local", "walk")}, {"polish": 1.0},
                                {"failure_credit": "half"}, {"transfer": "all"}, {"top": 1.5},
                                {"prior": {"local": -1}}, {"start": 0})],
    ("swarm", {"particles": 0}), ("swarm", {"inertia": -0.5}), ("bo", {"clip": 0.0}), ("bo", {"lengthscale": 0.0}),
    ("density", {"start": 0}), ("local", {"explore": 1.5})])
def test_built_from_python_a_strategy_checks_what_the_cli_checks(strategy, setting):
    """One table of ranges: a strategy built directly refuses what --strategy-option refuses,
    with the same line."""
    from tunesvc import search
    from tunesvc.errors import UsageError
    from tunesvc.types import Config

    tiny = search.SearchSpace((search.Dimension("x", (0, 1, 2)),), [Config(x=v) for v in (0, 1, 2)])
    with pytest.raises(UsageError) as direct:
        search.make(strategy, tiny, 0, **setting)
    with pytest.raises(UsageError) as parsed:
        search.parse_options(strategy, dict(setting))
    assert str(direct.value) == str(parsed.value)
    assert repr(next(iter(setting))) in str(direct.value) and "\n" not in str(direct.value)


ODD_VALUES = ["-1", "0", "0.5", "1", "2", "1e9", '"x"', "[]", '["local"]', "{}", "true", "null"]


@pytest.mark.parametrize("strategy", ["ensemble", "swarm", "bo", "density", "local"])
def test_every_setting_of_every_strategy_runs_or_is_refused_in_one_line(strategy):
    """Odd values of every setting: each replay runs, or exits 2 with one line; never a traceback."""
    from tunesvc import search

    for key in search.settings(strategy):
        for value in ODD_VALUES:
            if value == "1e9" and key in ("particles",):
                continue  # refused by its range; a billion particles would be allocated, not refused, without it
            r = run("replay", RECORDED, "--strategy", strategy, "--repeats", 1, "--budget", 12,
                    "--strategy-option", f"{key}={value}")
            assert r.exit_code in (0, 2), (key, value, r.output)
            if r.exit_code == 2:
                assert r.output.count("\n") == 1 and r.output.startswith("Error: "), (key, value, r.output)
