"""Optuna's samplers, driven by ask/tell over the valid configs only.

Optuna samples each parameter as an integer index into its ordered values (so
TPE can model "bigger tile" as nearby); the proposal is projected onto the
nearest valid config not yet measured, and the study is told the config that
was really measured. Optuna therefore never sees an invalid or repeated config.
"""

from __future__ import annotations

import math

from .._imports import require
from ..types import Measurement
from .base import Strategy
from .space import SearchSpace


class OptunaStrategy(Strategy):
    name = "optuna"

    def __init__(self, space: SearchSpace, seed: int | None = None):
        super().__init__(space, seed)
        self.optuna = require("optuna")
        self.optuna.logging.set_verbosity(self.optuna.logging.WARNING)
        self.dists = {
            d.name: self.optuna.distributions.IntDistribution(0, max(0, len(d.values) - 1)) for d in space.dims
        }
        self.study = self.optuna.create_study(direction="minimize", sampler=self.make_sampler())
        self.worst = -math.inf

    def make_sampler(self):
        raise NotImplementedError

    def propose(self) -> int:
        trial = self.study.ask(self.dists)
        point = [trial.params[n] for n in self.space.names]
        # The proposal itself is never evaluated: its outcome is the measured config's, told in observe().
        self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        return self.space.nearest(point, self.unseen)

    def observe(self, index: int, m: Measurement) -> None:
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
            )
        )


class TPEStrategy(OptunaStrategy):
    """Optuna's multivariate TPE over the value indices of every parameter."""

    name = "tpe"

    def make_sampler(self):
        return self.optuna.samplers.TPESampler(
            seed=self.seed, multivariate=True, n_startup_trials=8
        )
