"""Claims: so that no config is measured twice by processes sharing one Optuna study.

A process claims a config before it measures it by inserting one row into the study's system
attributes, ``tunesvc:claim:<hash of the config>``. Optuna's schema holds that key unique per
study, so of two processes claiming one config at once on one RDB storage (PostgreSQL, or an
SQLite file) exactly one insert succeeds; the other process takes its strategy's next config.
Optuna's own API cannot do this: ``set_study_system_attr`` overwrites. A claim names its holder
(host and process); it is released when its trial ends unmeasured, and a claim whose holder
was a process of this host that is gone (killed) is released when a search opens the study.
An in-memory study (one process) keeps its claims in a set.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket

PREFIX = "tunesvc:claim:"


def claim_key(config_key: str) -> str:
    return PREFIX + hashlib.sha1(config_key.encode()).hexdigest()


def holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


class MemoryClaims:
    """Claims of a study only this process sees."""

    def __init__(self):
        self.held: set[str] = set()

    def claim(self, config_key: str) -> bool:
        key = claim_key(config_key)
        if key in self.held:
            return False
        self.held.add(key)
        return True

    def release(self, config_key: str) -> None:
        self.held.discard(claim_key(config_key))

    def holders(self) -> dict:
        return {}

    def release_dead(self, measured=()) -> int:
        return 0


class RDBClaims:
    """Claims in an Optuna RDB storage's ``study_system_attributes`` table (unique per study and key)."""

    def __init__(self, storage, study_id: int):
        import sqlalchemy

        self.sa = sqlalchemy
        self.engine = storage.engine
        self.study_id = study_id
        self.integrity = sqlalchemy.exc.IntegrityError

    def claim(self, config_key: str) -> bool:
        """Whether this process now holds the config (False: another one does, or has measured it)."""
        sql = self.sa.text("INSERT INTO study_system_attributes (study_id, key, value_json) VALUES (:s, :k, :v)")
        try:
            with self.engine.begin() as conn:
                conn.execute(sql, {"s": self.study_id, "k": claim_key(config_key), "v": json.dumps(holder())})
        except self.integrity:
            return False
        return True

    def release(self, config_key: str) -> None:
        """Give a claim of this process back (its config was not measured)."""
        sql = self.sa.text("DELETE FROM study_system_attributes WHERE study_id = :s AND key = :k AND value_json = :v")
        with self.engine.begin() as conn:
            conn.execute(sql, {"s": self.study_id, "k": claim_key(config_key), "v": json.dumps(holder())})

    def holders(self) -> dict:
        """Claim key -> its holder, for every claim of the study."""
        sql = self.sa.text("SELECT key, value_json FROM study_system_attributes WHERE study_id = :s AND key LIKE :p")
        with self.engine.connect() as conn:
            rows = conn.execute(sql, {"s": self.study_id, "p": PREFIX + "%"}).all()
        return {k: json.loads(v) for k, v in rows}

    def release_dead(self, measured=()) -> int:
        """Release the claims of this host's processes that are gone (killed mid-measurement), but
        not those of configs in ``measured`` (config keys: they stay claimed for good); how many."""
        here, dead, keep = socket.gethostname(), 0, {claim_key(k) for k in measured}
        for key, who in self.holders().items():
            if key not in keep and who.get("host") == here and not alive(who.get("pid")):
                with self.engine.begin() as conn:
                    conn.execute(self.sa.text("DELETE FROM study_system_attributes WHERE study_id = :s AND key = :k"),
                                 {"s": self.study_id, "k": key})
                dead += 1
        return dead


def alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- the other write Optuna's API does not offer ----------------------------------------------------
def reflect_trial(rdb, trial_id: int, value: float | None, attrs: dict, first_value: float | None) -> None:
    """Put a re-measured config's outcome on its finished trial, in one transaction: the new value
    (or FAIL where the re-measurement failed), its attrs, and the first value as ``first_time_s``.
    Optuna refuses to change a finished trial; the study's best must still be the database's."""
    from sqlalchemy import orm
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    with orm.Session(rdb.engine) as session, session.begin():
        trial = session.get(models.TrialModel, trial_id)
        assert trial is not None, f"trial {trial_id} is not in the study"
        row = session.query(models.TrialValueModel).filter_by(trial_id=trial_id, objective=0).one_or_none()
        if value is None:
            trial.state = TrialState.FAIL
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(models.TrialValueModel(trial_id=trial_id, objective=0, value=value,
                                               value_type=models.TrialValueModel.TrialValueType.FINITE))
            trial.state = TrialState.COMPLETE
        else:
            row.value = value
        for key, v in (attrs | ({"first_time_s": first_value} if first_value is not None else {}) | {"remeasured": True}).items():
            a = session.query(models.TrialUserAttributeModel).filter_by(trial_id=trial_id, key=key).one_or_none()
            if a is None:
                session.add(models.TrialUserAttributeModel(trial_id=trial_id, key=key, value_json=json.dumps(v)))
            else:
                a.value_json = json.dumps(v)
