"""Every tune is an Optuna study: the strategy sampler, the live search, claims, and tune's study.

The sampler and the live search run on a constrained synthetic space (the landscape of
test_strategies.py) against real Optuna storages: in memory and SQLite files. The end-to-end
tests run ``tunesvc tune`` on the real OpenCL device with the quick healthy template and open
the study it names with Optuna, and ``tunesvc dashboard`` over real HTTP on loopback.
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from tunesvc import search  # noqa: E402
from tunesvc.measure.drive import drive  # noqa: E402
from tunesvc.search.live import StudySearch  # noqa: E402
from tunesvc.search.sampler import CONFIG, MEASURED, StrategySampler  # noqa: E402
from tunesvc.search.space import Dimension, SearchSpace  # noqa: E402
from tunesvc.types import Config, Measurement, Timing  # noqa: E402

TUNESVC = str(Path(sys.executable).with_name("tunesvc"))
HEALTHY = str(Path(__file__).parent / "fault_templates" / "healthy.py")
DIMS = (Dimension("bx", (8, 16, 32, 64)), Dimension("ty", (1, 2, 4)), Dimension("vec", (1, 2, 4)), Dimension("flag", (0, 1)))
STRATEGIES = [search.DEFAULT_STRATEGY, "local", "tpe", "random"]


@pytest.fixture(autouse=True, scope="module")
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    configs = [Config(dict(zip([d.name for d in DIMS], v))) for v in itertools.product(*(d.values for d in DIMS))]
    return SearchSpace(DIMS, [c for c in configs if c["bx"] * c["ty"] <= 128 and c["vec"] <= c["bx"] // 8 + 1])


def outcome(c: Config) -> Measurement:
    if c["bx"] == 64 and c["ty"] == 2 and c["flag"] == 1:
        return Measurement(c, "build", "too many registers")
    t = (1.0 + abs(math.log2(c["bx"]) - 4) + abs(math.log2(c["ty"]) - 1) * 0.5 + 0.3 * (c["vec"] == 1) + 0.1 * c["flag"]) * 1e-3
    return Measurement(c, "ok", timing=Timing(t, t * 0.9, t * 1.2, 0.0, 5))


class Landscape:
    """A runner over the synthetic landscape (the drive loop's Runner protocol)."""

    def evaluate(self, config, best=None):
        return outcome(config)


def run_live(live: StudySearch, trials: int) -> list[Config]:
    asked = []

    def measured(m):
        live.record(m, record_id=len(asked) + 100)
        asked.append(m.config)

    drive(live, Landscape(), lambda: "done" if len(asked) >= trials else None, measured)
    live.close()
    return asked


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_study_proposes_exactly_what_the_strategy_would(name, space):
    # The study layer changes no choice: replay (the bare strategy) and live tuning agree, so the
    # scores of benchmarks/search.py hold for live tuning.
    bare = []
    drive(search.make(name, space, 3), Landscape(), lambda: "done" if len(bare) >= 20 else None, lambda m: bare.append(m.config))
    live = run_live(StudySearch(search.make(name, space, 3)), 20)
    assert live == bare


def test_trials_hold_real_values_seconds_failures_and_record_ids(space, tmp_path):
    url = f"sqlite:///{tmp_path / 's.optuna.db'}"
    live = StudySearch(search.make(search.DEFAULT_STRATEGY, space, 1), url, "one problem", {"template": "synthetic"})
    asked = run_live(live, len(space))  # every config, the failing ones too
    study = optuna.load_study(study_name="one problem", storage=url)
    trials = study.get_trials()
    assert len(trials) == len(space) == len(set(asked))  # one trial per measured config, no extra ones
    assert {Config(t.params) for t in trials} == set(space.configs)  # real values: bx is 8..64, not an index
    for t in trials:
        m = outcome(Config(t.params))
        assert t.user_attrs[MEASURED] and t.user_attrs["status"] == m.status
        assert json.loads(t.user_attrs[CONFIG]) == t.params
        assert t.user_attrs["tunesvc_record"] >= 100
        if m.ok:
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value == pytest.approx(m.time)  # seconds
        else:
            assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["reason"] == "too many registers"
    assert study.best_value == pytest.approx(min(outcome(c).time for c in space.configs))
    assert "seconds" in study.user_attrs["objective"] and study.metric_names == ["seconds"]
    assert study.user_attrs["template"] == "synthetic"


def test_a_re_measured_leader_changes_its_trial_so_the_best_is_the_databases(space, tmp_path):
    url = f"sqlite:///{tmp_path / 's.optuna.db'}"
    live = StudySearch(search.make("random", space, 2), url, "p")
    asked = run_live(live, 6)
    study = optuna.load_study(study_name="p", storage=url)
    best = study.best_trial
    slower = Measurement(Config(best.params), "ok", timing=Timing(1.0, 0.9, 1.1, 0.0, 5))
    assert live.reflect(slower, record_id=7)
    again = optuna.load_study(study_name="p", storage=url)
    assert len(again.trials) == len(asked)  # changed in place: no trial added
    changed = again.trials[best.number]
    assert changed.value == 1.0 and changed.user_attrs["first_time_s"] == pytest.approx(best.value)
    assert changed.user_attrs["remeasured"] and changed.user_attrs["tunesvc_record"] == 7
    assert again.best_trial.number != best.number  # the leader is now the next fastest, as in the database


def test_a_second_search_on_the_study_learns_what_the_first_measured(space, tmp_path):
    url = f"sqlite:///{tmp_path / 's.optuna.db'}"
    first = run_live(StudySearch(search.make(search.DEFAULT_STRATEGY, space, 1), url, "p"), 8)
    later = StudySearch(search.make(search.DEFAULT_STRATEGY, space, 2), url, "p")
    assert not any(later.strategy.unseen[space.index[c]] for c in first)  # told, not re-measured
    second = run_live(later, 8)
    assert not set(first) & set(second)


def test_two_searches_at_once_never_take_one_config(space, tmp_path):
    # Two processes' worth of searches on one storage, asking in turn and measuring late: a config
    # one has claimed (its trial RUNNING) is never handed to the other, whatever their strategies want.
    url = f"sqlite:///{tmp_path / 's.optuna.db'}"
    a, b = (StudySearch(search.make(n, space, 5), url, "p") for n in (search.DEFAULT_STRATEGY, search.DEFAULT_STRATEGY))
    held = {}
    for turn in range(len(space)):
        live = (a, b)[turn % 2]
        c = live.ask()
        if c is None:
            break
        assert c not in held, f"{c} handed out twice"
        held[c] = live
        if turn % 3 == 2:  # measure some late, so claims are held while the other asks
            for c2, owner in list(held.items()):
                if c2 in owner.open:
                    owner.tell(c2, outcome(c2))
                    owner.record(outcome(c2))
    assert set(held) == set(space.configs)  # the two together took every config, each once
    assert a.ask() is None and b.ask() is None


def test_same_seed_claims_collide_and_the_loser_moves_on(space, tmp_path):
    # Same strategy, same seed: both want the same config first; only one gets it.
    url = f"sqlite:///{tmp_path / 's.optuna.db'}"
    a, b = (StudySearch(search.make("random", space, 9), url, "p") for _ in range(2))
    ca, cb = a.ask(), b.ask()
    assert ca is not None and cb is not None and ca != cb


def test_a_claim_is_granted_once_until_released(tmp_path):
    # The claim alone, without the trials' view: two holders of one study, one config.
    from tunesvc.search.claims import RDBClaims

    url = f"sqlite:///{tmp_path / 's.optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    optuna.create_study(storage=storage, study_name="p")
    sid = storage.get_study_id_from_name("p")
    a, b = RDBClaims(storage, sid), RDBClaims(storage, sid)
    assert a.claim('{"x":1}') and not b.claim('{"x":1}') and not a.claim('{"x":1}')
    assert b.claim('{"x":2}')
    a.release('{"x":1}')
    assert b.claim('{"x":1}')
    assert len(a.holders()) == 2
    storage.engine.dispose()


def test_unmeasured_trials_end_pruned_and_free_their_config(space, tmp_path):
    url = f"sqlite:///{tmp_path / 's.optuna.db'}"
    a = StudySearch(search.make("grid", space, 0), url, "p")
    asked = [a.ask(), a.ask()]
    a.tell(asked[0], outcome(asked[0]))
    a.record(outcome(asked[0]))
    a.close()  # asked[1] was never measured
    study = optuna.load_study(study_name="p", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    b = StudySearch(search.make("grid", space, 0), url, "p")
    assert b.ask() == asked[1]  # its claim was released; the measured one stays taken


def test_a_killed_process_frees_its_claim(space, tmp_path):
    url = f"sqlite:///{tmp_path / 's.optuna.db'}"
    code = ("import itertools, os, sys; sys.path.insert(0, %r); from test_study import *; from tunesvc.search.space import *;"
            "configs = [Config(dict(zip([d.name for d in DIMS], v))) for v in itertools.product(*(d.values for d in DIMS))];"
            "sp = SearchSpace(DIMS, [c for c in configs if c['bx'] * c['ty'] <= 128 and c['vec'] <= c['bx'] // 8 + 1]);"
            "live = StudySearch(search.make('grid', sp, 0), %r, 'p'); print(json.dumps(dict(live.ask()))); sys.stdout.flush(); os._exit(9)")
    out = subprocess.run([sys.executable, "-c", code % (str(Path(__file__).parent), url)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 9, out.stderr
    lost = Config(json.loads(out.stdout))
    study = optuna.load_study(study_name="p", storage=url)
    assert [t.state.name for t in study.trials] == ["RUNNING"]  # killed mid-measurement
    b = StudySearch(search.make("grid", space, 0), url, "p")
    assert optuna.load_study(study_name="p", storage=url).trials[0].state.name == "PRUNED"
    assert b.ask() == lost  # measured after all, by the next search on this host


def test_the_sampler_runs_study_optimize_on_its_own(space):
    sampler = StrategySampler(search.make(search.DEFAULT_STRATEGY, space, 4))
    study = optuna.create_study(sampler=sampler)
    seen = []

    def objective(trial):
        c = Config({d.name: trial.suggest_categorical(d.name, list(d.values)) for d in DIMS})
        seen.append(c)
        m = outcome(c)
        if not m.ok:
            raise RuntimeError(m.reason)
        return m.time

    study.optimize(objective, n_trials=len(space) + 5, catch=(RuntimeError,))
    assert len(seen) == len(set(seen)) == len(space)  # valid configs only, each once, then it stops
    assert set(seen) == set(space.configs)
    assert len(study.trials) == len(space) + 1 and study.trials[-1].state.name == "PRUNED"  # the one that found it empty


# ---- tunesvc tune and tunesvc dashboard, end to end --------------------------------------------------
def tune(db: Path, *args) -> dict:
    out = subprocess.run([TUNESVC, "tune", HEALTHY, "--shape", "4096", "--db", str(db), "--json", *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_tune_leaves_a_study_that_optuna_opens(tmp_path, cl_info):
    db = tmp_path / "tune.db"
    r = tune(db, "--trials", "5", "--seed", "1")
    assert r["strategy"] == search.DEFAULT_STRATEGY
    path = Path(r["storage"].split("///", 1)[1].split("?")[0])
    assert path.exists() and path != db  # the study is where --json says, not in the tuning database
    storage = f"sqlite:///{path}"
    study = optuna.load_study(study_name=r["study"], storage=storage)
    measured = {json.dumps(t.params, sort_keys=True) for t in study.trials}
    assert len(study.trials) == len(measured) == 5  # one trial per measured config
    assert measured == {json.dumps(c, sort_keys=True) for c in r["new_configs"]}
    assert study.best_value == pytest.approx(r["best"]["time_s"])  # seconds, and the re-measured leaders told
    ids = {row[0] for row in sqlite3.connect(db).execute("SELECT id FROM measurements")}
    assert {t.user_attrs["tunesvc_record"] for t in study.trials} <= ids
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "version_info" not in tables and "trials" not in tables  # the tuning database holds no Optuna table
    r2 = tune(db, "--trials", "3", "--seed", "2", "--strategy", "tpe")  # resumed, with another strategy
    again = optuna.load_study(study_name=r2["study"], storage=storage)
    assert len(again.trials) == 8 and not {json.dumps(c, sort_keys=True) for c in r2["new_configs"]} & measured
    assert again.best_value == pytest.approx(r2["best"]["time_s"])


def test_a_study_file_left_by_a_deleted_database_is_set_aside(tmp_path, cl_info):
    """tune.db deleted, tune.optuna.db kept: the next tune measures the default and its trials again
    into the new database (the old study had them as measured, so they were skipped and the new
    database never got them); the old study is renamed aside, not deleted."""
    db = tmp_path / "tune.db"
    r = tune(db, "--trials", "3", "--seed", "1")
    first = {json.dumps(c, sort_keys=True) for c in r["new_configs"]}
    for f in tmp_path.glob("tune.db*"):
        f.unlink()
    r2 = tune(db, "--trials", "3", "--seed", "1")
    assert len(r2["new_configs"]) == 3 and {json.dumps(c, sort_keys=True) for c in r2["new_configs"]} == first
    assert r2["default"] is not None and r2["default"]["status"] == "ok"
    orphans = list(tmp_path.glob("tune.optuna.orphan-*.db"))
    assert len(orphans) == 1
    old = optuna.load_study(study_name=r["study"], storage=f"sqlite:///{orphans[0]}")
    assert len(old.trials) == 3
    r3 = tune(db, "--trials", "2", "--seed", "2")  # a database that exists keeps its study
    assert len(list(tmp_path.glob("tune.optuna.orphan-*.db"))) == 1
    assert not {json.dumps(c, sort_keys=True) for c in r3["new_configs"]} & first


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_problems_study_on_loopback(tmp_path, cl_info):
    pytest.importorskip("optuna_dashboard")
    db = tmp_path / "tune.db"
    r = tune(db, "--trials", "3")
    port = free_port()
    proc = subprocess.Popen([TUNESVC, "dashboard", HEALTHY, "--shape", "4096", "--db", str(db), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5))
            except OSError:
                time.sleep(0.2)
        assert body is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert [s["study_name"] for s in body["study_summaries"]] == [r["study"]]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_dashboard_of_an_untuned_problem_is_one_line(tmp_path, cl_info):
    for db in (tmp_path / "none.db", None):
        if db is None:
            tune(tmp_path / "t.db", "--trials", "1")
            db = tmp_path / "t.db"
            shape = "1000"  # tuned the 4096 one only
        else:
            shape = "4096"
        out = subprocess.run([TUNESVC, "dashboard", HEALTHY, "--shape", shape, "--db", str(db)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "tune" in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "none.optuna.db").exists()  # looking made no file


def test_dashboard_on_the_tuning_database_itself_is_refused_and_changes_nothing(tmp_path, cl_info):
    db = tmp_path / "t.db"
    tune(db, "--trials", "1")
    tables = lambda: sorted(r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master"))  # noqa: E731
    before = tables()
    out = subprocess.run([TUNESVC, "dashboard", HEALTHY, "--shape", "4096", "--storage", f"sqlite:///{db}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "tune.optuna.db" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert tables() == before  # no Optuna table added to the tuning database
