"""tune() end to end on the real OpenCL device: strategies, storage, reuse."""

from __future__ import annotations

import pytest

from tunesvc.cache import Store
from tunesvc.errors import UsageError
from tunesvc.tuning.tuner import tune

SHAPE = (24, 40, 16)


@pytest.mark.parametrize("strategy", ["grid", "random", "tpe"])
def test_each_strategy_measures_the_default_first_and_stores_everything(db_path, strategy):
    r = tune("matmul", SHAPE, db=db_path, strategy=strategy, trials=4, seed=1)
    assert len(r.measured) == 4
    assert r.measured[0].config == r.default.config  # the template default comes first
    assert len({m.config for m in r.measured}) == 4  # never the same config twice
    assert r.best is not None and r.best.ok and r.best.gflops > 0
    # The best is a measured config; its time may come from the final interleaved
    # re-measurement of the leaders, so it is compared with the leaders, not their first times.
    assert r.best.config in {m.config for m in r.measured}
    ok = sorted((m for m in r.measured if m.ok), key=lambda m: m.time)
    assert r.best.config in {m.config for m in ok[:5]}
    assert Store(db_path).count() == 4
    assert r.stop_reason == "4 trials done"


def test_tuning_again_reuses_measurements_instead_of_running_them(db_path):
    first = tune("matmul", SHAPE, db=db_path, strategy="grid", trials=3)
    second = tune("matmul", SHAPE, db=db_path, strategy="grid", trials=3)
    assert second.reused == 3
    assert not {m.config for m in first.measured} & {m.config for m in second.measured}
    assert Store(db_path).count() == 6
    assert second.best.config in {m.config for m in first.measured + second.measured}


def test_time_budget_stops_the_search(db_path):
    r = tune("matmul", SHAPE, db=db_path, strategy="random", time_budget=0.5, seed=2)
    assert "time budget" in r.stop_reason or r.stop_reason == "space exhausted"
    assert len(r.measured) >= 1


def test_a_tiny_space_is_exhausted(db_path):
    r = tune("matmul", (1, 1, 1), db=db_path, strategy="grid", trials=10_000)
    assert r.stop_reason == "space exhausted"
    assert len(r.measured) == r.space_size
    assert all(m.ok for m in r.measured), [m.reason for m in r.measured if not m.ok]


@pytest.mark.parametrize("kwargs, match", [
    ({"trials": 0}, "--trials"),
    ({"time_budget": -1}, "--time-budget"),
    ({"strategy": "annealing"}, "unknown strategy"),
    ({"dtype": "int8"}, "unknown dtype"),
    ({"device": "no-such-device"}, "no device matches"),
])
def test_bad_arguments_raise_usage_errors_and_leave_no_database(tmp_path, kwargs, match):
    db = tmp_path / "x.db"
    with pytest.raises(UsageError, match=match):
        tune("matmul", SHAPE, db=db, **kwargs)
    assert not db.exists() or Store(db).count() == 0


def test_a_shape_larger_than_device_memory_is_refused(tmp_path):
    with pytest.raises(UsageError, match="smaller shape"):
        tune("matmul", (200_000, 200_000, 200_000), db=tmp_path / "x.db", trials=1)


def test_a_retune_after_a_template_change_measures_the_old_winner_first(db_path):
    """Records of an earlier source hash are stale as answers, and are the re-tune's first seeds."""
    import sqlite3

    first = tune("matmul", SHAPE, db=db_path, strategy="random", trials=6, seed=3)
    winner = next(m.config for m in first.measured[1:] if m.ok)  # not the default: the re-tune measures that anyway
    with sqlite3.connect(db_path) as con:  # as if matmul.cl had changed since: its records are an older version's
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            if "template_hash" in [c[1] for c in con.execute(f"PRAGMA table_info({table})")]:
                con.execute(f"UPDATE {table} SET template_hash = 'an-earlier-source'")
        con.execute("UPDATE measurements SET time_median = 1e-9 WHERE config = ?", (winner.key,))
        assert con.total_changes > 1
    with sqlite3.connect(db_path.with_name(db_path.stem + ".optuna.db")) as con:  # and its study an older version's
        con.execute("UPDATE studies SET study_name = study_name || ' (earlier)'")
        assert con.total_changes == 1
    again = tune("matmul", SHAPE, db=db_path, trials=2, seed=5)  # the default strategy: the default, then seeds
    assert again.reused == 0 and [m.config for m in again.measured] == [again.default.config, winner]
