"""Optuna's samplers, driven by ask/tell over the valid configs only.

Optuna samples each parameter as an integer index into its ordered values (so
TPE can model "bigger tile" as nearby); the proposal is projected onto the
nearest valid config not yet measured, and the study is told the config that
was really measured. Optuna therefore never sees an invalid or repeated config.

This study is the strategy's model, in memory unless a ``storage`` is given. In a tune, TPE is
wrapped like every other strategy by :mod:`tunesvc.search.sampler`, and the tune's own study
(real values, seconds, one trial per measured config, shared through ``--storage``) is the record;
the proposals told FAIL here never reach it.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import require
from ..types import Measurement
from .base import SpaceExhausted, Strategy
from .space import SearchSpace


MEASURED = "tunesvc_measured"  # user attr of trials that carry a real measurement


class OptunaStrategy(Strategy):
    name = "optuna"
    keeps_state = True  # with a storage; a tune gives it none (its study is the tune's, search/live.py)

    def __init__(self, space: SearchSpace, seed: int | None = None, storage: str | None = None, study_name: str | None = None):
        super().__init__(space, seed)
        self.optuna = require("optuna")
        self.dists = {
            d.name: self.optuna.distributions.IntDistribution(0, max(0, len(d.values) - 1)) for d in space.dims
        }
        # With a storage (an Optuna RDB URL), the study outlives the process and can be shared by
        # several workers: the measured trials in it are the shared record of what was tried.
        self.study = self.optuna.create_study(
            direction="minimize", sampler=self.make_sampler(), storage=storage, study_name=study_name, load_if_exists=True
        )
        self.worst = -math.inf
        self._in_study = np.zeros(len(space), dtype=bool)
        self._synced = 0
        self.sync()

    def sync(self) -> None:
        """Mark configs measured by other workers (or an earlier run) in the study as seen."""
        trials = self.study.get_trials(deepcopy=False)
        for t in trials[self._synced:]:
            if not t.user_attrs.get(MEASURED):
                continue
            i = self.space.index.get(self.space.decode(t.params))
            if i is not None:
                self._in_study[i] = True
                self.unseen[i] = False
                if t.value is not None:
                    self.worst = max(self.worst, t.value)
        self._synced = len(trials)

    def make_sampler(self):
        raise NotImplementedError

    def propose(self) -> int:
        self.sync()
        if not self.unseen.any():  # another worker took the last ones
            raise SpaceExhausted
        trial = self.study.ask(self.dists)
        point = [trial.params[n] for n in self.space.names]
        # The proposal itself is never evaluated: its outcome is the measured config's, told in observe().
        self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        return self.space.nearest(point, self.unseen)

    def observe(self, index: int, m: Measurement) -> None:
        if self._in_study[index]:
            return  # already recorded (a resumed or shared study)
        self._in_study[index] = True
        codes = self.space.codes[index]
        params = {n: int(codes[j]) for j, n in enumerate(self.space.names)}
        if m.ok:
            value = math.log(m.time)
            self.worst = max(self.worst, value)
        elif self.worst > -math.inf:
            value = self.worst + math.log(2.0)  # failed configs rank below every working one
        else:
            value = None
        trial_state = self.optuna.trial.TrialState
        self.study.add_trial(
            self.optuna.trial.create_trial(
                params=params,
                distributions=self.dists,
                value=value,
                state=trial_state.COMPLETE if value is not None else trial_state.FAIL,
                user_attrs={MEASURED: True, "status": m.status},
            )
        )


class TPEStrategy(OptunaStrategy):
    """Optuna's multivariate TPE over the value indices of every parameter."""

    name = "tpe"

    def make_sampler(self):
        return self.optuna.samplers.TPESampler(
            seed=self.seed, multivariate=True, n_startup_trials=8
        )
