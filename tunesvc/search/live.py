"""A live search: a strategy that proposes through an Optuna study, one trial per measured config.

:class:`StudySearch` has a strategy's ``ask``/``tell`` (so :func:`tunesvc.measure.drive.drive`
runs it as it runs a bare strategy in replay), and keeps the study: ``ask`` claims a config and
opens a trial for it (RUNNING, with the real parameter values and the config as ``tunesvc_config``),
``record`` finishes the trial once the measurement is stored (its value in seconds, or failed with
the status and reason, and the record's id), ``reflect`` puts a re-measured leader's new time on its
trial, and ``close`` ends the trials the run asked for but did not measure (PRUNED, claim released).
"""

from __future__ import annotations

import datetime
import os
import socket
import warnings

from ..types import Config, Measurement
from .base import Strategy
from .claims import MemoryClaims, RDBClaims, alive, reflect_trial
from .sampler import (CONFIG, MEASURED, OBJECTIVE, RECORD, STATE, StrategySampler, config_key, distributions, optuna,
                      trial_attrs, value_of)

HOLDER = "tunesvc_holder"  # {"host", "pid"} of the process measuring a RUNNING trial


def rdb_storage(url: str):
    """Optuna's RDB storage of ``url``; an SQLite file in WAL mode with normal syncs (a trial takes
    a dozen small transactions: each an fsync of the journal otherwise, ~190 ms a trial on this disk)."""
    rdb = optuna.storages.RDBStorage(url)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        def pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        event.listen(rdb.engine, "connect", pragmas)
        rdb.engine.dispose()  # connections made from now on take the pragmas
    return rdb


def open_study(storage: str | None, name: str | None, sampler, attrs: dict | None = None):
    """(study, its storage): a minimizing study in ``storage`` (an RDB URL; None: in memory)."""
    backend = rdb_storage(storage) if storage else optuna.storages.InMemoryStorage()
    study = optuna.create_study(direction="minimize", sampler=sampler, storage=backend, study_name=name, load_if_exists=True)
    if study.user_attrs.get("objective") != OBJECTIVE:
        study.set_user_attr("objective", OBJECTIVE)
        for k, v in (attrs or {}).items():
            study.set_user_attr(k, v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["seconds"])
    return study, backend


class StudySearch:
    """``strategy`` searching through the study ``name`` of ``storage`` (an Optuna RDB URL, or None
    for a study in memory); ``attrs`` are stated on a new study (problem, device, ...)."""

    def __init__(self, strategy: Strategy, storage: str | None = None, name: str | None = None, attrs: dict | None = None):
        self.strategy = strategy
        self.space = strategy.space
        self.dists = distributions(self.space)
        self.sampler = StrategySampler(strategy, claim=self._claim)
        self.study, self.storage = open_study(storage, name, self.sampler, attrs)
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self.rdb = self.storage if storage else None
        self.claims = RDBClaims(self.rdb, self.study_id) if self.rdb else MemoryClaims()
        self.claims.release_dead(self._measured_keys())
        self._end_dead_trials()
        self.open: dict[Config, tuple[int, int]] = {}  # config -> (number, id) of its RUNNING trial
        self.first: list[Config] = []
        self.sampler.sync(self.study)

    # ---- what the tuner and the drive loop use ----------------------------------------------------
    @property
    def unseen(self):
        return self.strategy.unseen

    def __getattr__(self, name):
        """The strategy's other settings and hooks (e.g. ``expect``), as on the bare strategy."""
        if name == "strategy":  # not set yet: no recursion while constructing
            raise AttributeError(name)
        return getattr(self.strategy, name)

    def prefer(self, configs) -> None:
        self.strategy.prefer(configs)

    def measure_first(self, config: Config | None) -> None:
        """Measure ``config`` (the template's default) before the strategy's proposals, unless known."""
        i = self.space.index.get(config) if config is not None else None
        if config is not None and i is not None and self.strategy.unseen[i]:
            self.strategy.unseen[i] = False  # so the strategy does not propose it again
            self.first.append(config)

    def ask(self) -> Config | None:
        """The next config, claimed, with a RUNNING trial; None when none is left unclaimed."""
        while self.first:
            config = self.first.pop(0)
            if self._claim(self.study, None, config):
                return self._open_trial(config)
        proposed = self.sampler.propose(self.study)  # the strategy's choice, claimed
        return self._open_trial(proposed) if proposed is not None else None

    def tell(self, config: Config, m: Measurement) -> None:
        """The strategy learns at once; the trial ends when :meth:`record` gives the record's id
        (after the database stored it: one it could not store stays unmeasured in the study too)."""
        self.strategy.tell(config, m)

    def record(self, m: Measurement, record_id: int | None = None) -> None:
        """End the trial of a measured (and stored) config: its value in seconds, or failed."""
        opened = self.open.pop(m.config, None)
        attrs = trial_attrs(m) | ({RECORD: record_id} if record_id is not None else {})
        if opened is None:  # measured without being asked (a caller's own config)
            self._add(m, attrs)
            return
        number, trial_id = opened
        for k, v in attrs.items():
            if k != CONFIG:  # set when the trial was opened
                self.storage.set_trial_user_attr(trial_id, k, v)
        value = value_of(m)
        self.sampler.mark_seen(number)
        self.storage.set_trial_state_values(trial_id, STATE.COMPLETE if value is not None else STATE.FAIL,
                                            [value] if value is not None else None)

    def known(self, measurements: dict, record_ids: dict | None = None) -> int:
        """Tell the strategy what the database knows, and add to the study each measurement it does
        not hold yet (claimed, so no process measures it again); how many were added."""
        record_ids = record_ids or {}
        self.sampler.sync(self.study)
        in_study = self._measured_keys()
        added = 0
        for config, m in measurements.items():
            key = config_key(config)
            if key in in_study:
                continue  # the strategy was told the study's outcome by sync()
            self.strategy.tell(config, m)
            if config in self.space and self.claims.claim(key):
                attrs = trial_attrs(m) | {"source": "database"}
                if record_ids.get(config) is not None:
                    attrs[RECORD] = record_ids[config]
                self._add(m, attrs)
                added += 1
        return added

    def reflect(self, m: Measurement, record_id: int | None = None) -> bool:
        """Put a re-measured config's new outcome on its trial (the study's best stays the
        database's); False where the study cannot be changed (in memory) or holds no trial for it."""
        trial = self._trial_of(m.config)
        if trial is None or self.rdb is None:
            return False
        trial_id = self.rdb.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        attrs = trial_attrs(m) | ({RECORD: record_id} if record_id is not None else {})
        first = trial.user_attrs.get("first_time_s", trial.value)
        reflect_trial(self.rdb, trial_id, value_of(m), attrs, first_value=first)
        return True

    def close(self) -> None:
        """End the trials asked for and not recorded (the run stopped first, or the database could not
        store the measurement): PRUNED, claims released, so a later run measures them."""
        for config, (number, trial_id) in list(self.open.items()):
            self.storage.set_trial_user_attr(trial_id, "tunesvc_unmeasured", "the run stopped before measuring it")
            self.sampler.mark_seen(number)
            self.storage.set_trial_state_values(trial_id, STATE.PRUNED)
            self.claims.release(config_key(config))
        self.open.clear()
        if self.rdb is not None:
            self.rdb.engine.dispose()  # psycopg 3 warns of connections left open at exit

    # ---- inside -----------------------------------------------------------------------------------
    def _claim(self, study, trial, config: Config) -> bool:
        return self.claims.claim(config_key(config))

    def _open_trial(self, config: Config) -> Config:
        """The RUNNING trial of a claimed config: its real values, the config and the holder, written
        in one transaction (Optuna's ``study.ask`` writes each parameter in one of its own: 9 ms
        each on PostgreSQL, a hundred a trial for matmul's)."""
        now = datetime.datetime.now()
        trial = optuna.trial.FrozenTrial(
            number=-1, state=STATE.RUNNING, value=None, datetime_start=now, datetime_complete=None,
            params=dict(config), distributions=self.dists, intermediate_values={}, system_attrs={}, trial_id=-1,
            user_attrs={CONFIG: config_key(config), HOLDER: {"host": socket.gethostname(), "pid": os.getpid()}})
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=trial)
        number = self.storage.get_trial_number_from_id(trial_id)
        self.sampler.own.add(number)
        self.open[config] = (number, trial_id)
        return config

    def _add(self, m: Measurement, attrs: dict) -> None:
        value = value_of(m)
        self.study.add_trial(optuna.trial.create_trial(
            params=dict(m.config), distributions=self.dists, value=value, user_attrs=attrs,
            state=STATE.COMPLETE if value is not None else STATE.FAIL))
        trial = self._trial_of(m.config)
        if trial is not None:
            self.sampler.mark_seen(trial.number)

    def _measured_keys(self) -> set[str]:
        return {t.user_attrs[CONFIG] for t in self.study.get_trials(deepcopy=False)
                if t.user_attrs.get(MEASURED) and CONFIG in t.user_attrs}

    def _trial_of(self, config: Config):
        """The trial that holds a config's measurement, or None."""
        key = config_key(config)
        return next((t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get(CONFIG) == key
                     and t.user_attrs.get(MEASURED)), None)

    def _end_dead_trials(self) -> None:
        """Trials left RUNNING by a process of this host that is gone (killed): PRUNED, so the
        dashboard does not show them running forever; their claims were released."""
        here = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(STATE.RUNNING,)):
            who = t.user_attrs.get(HOLDER) or {}
            if who.get("host") == here and not alive(who.get("pid")):
                self.sampler.mark_seen(t.number)
                self.storage.set_trial_state_values(
                    self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number), STATE.PRUNED)
