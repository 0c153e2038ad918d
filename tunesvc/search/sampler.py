"""Any tunesvc strategy as an Optuna sampler, proposing whole valid configs by relative sampling.

:class:`StrategySampler` wraps a :class:`~tunesvc.search.base.Strategy`: its relative search space
is one :class:`~optuna.distributions.CategoricalDistribution` of the real values per parameter, and
``sample_relative`` answers with a whole config the strategy chose from the valid ones, never one
claimed or measured before (by this process or, through the study, by any other). Before each
proposal the sampler reads the study's trials and tells the strategy what other processes
measured, so processes on one RDB storage run one search. The trials speak tunesvc's language:
real parameter values, the median time in seconds as the value, failures as failed trials with
their status and reason (see :func:`trial_attrs`, :func:`measurement_of`).

The same strategy objects drive replay directly (:func:`tunesvc.measure.drive.drive`); the study
is for live tuning. This module imports Optuna; ``tunesvc.search`` does not import it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import require
from ..types import Config, Measurement, Timing
from .base import Strategy

optuna = require("optuna")

#: user attrs of a tunesvc trial
CONFIG = "tunesvc_config"  # the config as canonical JSON: the trial's identity (and, while RUNNING, its claim)
MEASURED = "tunesvc_measured"  # True on a trial that holds a real measurement
RECORD = "tunesvc_record"  # the id of the record in the tuning database
DETAILS = "measured"  # times (seconds), runs, rates, compile time
STATE = optuna.trial.TrialState
FINISHED = (STATE.COMPLETE, STATE.FAIL)
#: the study's objective, stated on the study
OBJECTIVE = "median kernel time in seconds, from device events (lower is better); failed configs are failed trials"


def config_key(config) -> str:
    """The canonical JSON of a config (the same text for the same values, in any order)."""
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"))


def distributions(space) -> dict:
    """Parameter -> a categorical distribution of its real values (one value: fixed)."""
    return {d.name: optuna.distributions.CategoricalDistribution(list(d.values)) for d in space.dims}


def trial_attrs(m: Measurement) -> dict:
    """What a trial records of a measurement beside its value: status, the reason of a failure (or
    of an abandoned timing), and one ``measured`` attr with the times, rates and compile time (few
    attrs: each is a transaction of its own in Optuna's RDB storage)."""
    attrs = {CONFIG: config_key(m.config), MEASURED: True, "status": m.status}
    if m.reason:
        attrs["reason"] = m.reason[:2000]
    details: dict[str, Any] = {}
    if m.timing is not None:
        t = m.timing
        details.update(time_min_s=t.min, time_max_s=t.max, time_iqr_s=t.iqr, runs=t.count)
    details.update({k: v for k, v in (("gflops", m.gflops), ("gbps", m.gbps)) if v is not None})
    if m.compile_seconds:
        details["compile_s"] = m.compile_seconds
    if m.extra.get("abandoned"):
        details["abandoned"] = True  # timed no further: its first launch was far slower than the best
    if details:
        attrs[DETAILS] = details
    return attrs


def value_of(m: Measurement) -> float | None:
    """The trial's value: the median time in seconds; None (a failed trial) for a failed config."""
    return m.time if m.ok and math.isfinite(m.time) else None


def measurement_of(trial) -> tuple[Config, Measurement] | None:
    """The config and measurement a finished tunesvc trial holds (another process's, or an earlier
    run's), or None for a trial that is not one (unfinished, or written by something else)."""
    a = trial.user_attrs
    if trial.state not in FINISHED or not a.get(MEASURED) or CONFIG not in a:
        return None
    config = Config(json.loads(a[CONFIG]))
    status = a.get("status", "ok" if trial.state == STATE.COMPLETE else "runtime")
    if status != "ok" or trial.value is None:
        return config, Measurement(config, status if status != "ok" else "runtime", a.get("reason", ""))
    v, d = float(trial.value), a.get(DETAILS) or {}
    timing = Timing(v, d.get("time_min_s", v), d.get("time_max_s", v), d.get("time_iqr_s", 0.0), d.get("runs", 1))
    return config, Measurement(config, "ok", timing=timing, gflops=d.get("gflops"), gbps=d.get("gbps"),
                               compile_seconds=d.get("compile_s", 0.0))


#: Optuna is imported at run time (require), so mypy sees its sampler base as Any
_BaseSampler: Any = optuna.samplers.BaseSampler


class StrategySampler(_BaseSampler):
    """A tunesvc strategy as an Optuna sampler.

    ``claim(study, trial, config) -> bool`` is asked before a config is handed out (the study's
    claims, :mod:`tunesvc.search.claims`; by default every config is free). Under
    ``study.optimize`` or ``study.ask`` Optuna calls ``sample_relative``, which proposes; a caller
    that wants to know of an exhausted space before a trial exists calls :meth:`propose` and then
    ``study.ask(distributions(space))`` (the proposal is handed out as ``pending``), or writes the
    trial itself, as :class:`tunesvc.search.live.StudySearch` does (in one transaction).
    """

    def __init__(self, strategy: Strategy, claim=None):
        self.strategy = strategy
        self.space = strategy.space
        self.dists = distributions(self.space)
        self.claim = claim or (lambda study, trial, config: True)
        self.pending: Config | None = None  # proposed by propose(), handed out by the next sample_relative
        self.exhausted = False
        self._seen: set[int] = set()  # trial numbers whose outcome (or claim) the strategy has been told
        self.own: set[int] = set()  # trials this sampler proposed

    # ---- Optuna's sampler interface -------------------------------------------------------------
    def infer_relative_search_space(self, study, trial) -> dict:
        return self.dists

    def sample_relative(self, study, trial, search_space) -> dict:
        if not search_space:
            return {}
        config, self.pending = self.pending, None
        if config is None:
            config = self.propose(study, trial)
            if config is None:  # study.optimize past the end of the space: this trial is pruned, the loop stopped
                self.exhausted = True
                try:
                    study.stop()
                except RuntimeError:  # not inside study.optimize
                    pass
                return {}
        self.own.add(trial.number)
        return dict(config)

    def sample_independent(self, study, trial, param_name, param_distribution):
        # Only reached past the end of the space, or for a parameter outside it.
        if self.exhausted:
            raise optuna.TrialPruned("every valid config has been proposed")
        return optuna.samplers.RandomSampler().sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        """Tell the strategy an outcome ``study.optimize`` produced (``study.tell`` callers that
        tell the strategy themselves mark the trial seen first)."""
        if trial.number in self._seen or state not in FINISHED:  # a pruned trial measured nothing
            return
        self._seen.add(trial.number)
        config = self._config_of(trial)
        if config is None:
            return
        a = trial.user_attrs
        if values and state == STATE.COMPLETE:
            m = Measurement(config, "ok", timing=Timing(values[0], values[0], values[0], 0.0, 1))
        else:
            m = Measurement(config, a.get("status", "runtime") if a.get("status") != "ok" else "runtime", a.get("reason", ""))
        self.strategy.tell(config, m)

    # ---- proposals --------------------------------------------------------------------------------
    def propose(self, study, trial=None) -> Config | None:
        """The strategy's next config that no one has claimed or measured, claimed; None when
        none is left. Other processes' trials are told to the strategy first."""
        while True:
            self.sync(study)
            config = self.strategy.ask()
            if config is None:
                return None
            if self.claim(study, trial, config):
                return config
            # lost to another process; the strategy is told its outcome once that trial finishes

    def sync(self, study) -> None:
        """Tell the strategy the outcomes of trials it has not seen (other processes', earlier
        runs'), and keep it off configs that others are measuring now."""
        for t in study.get_trials(deepcopy=False):
            if t.number in self._seen or t.number in self.own:
                continue
            got = measurement_of(t)
            if got is not None:
                self._seen.add(t.number)
                self.strategy.tell(*got)
            elif t.state == STATE.RUNNING and CONFIG in t.user_attrs:
                i = self.space.index.get(Config(json.loads(t.user_attrs[CONFIG])))
                if i is not None:
                    self.strategy.unseen[i] = False  # claimed: told its outcome when it finishes
            elif t.state in FINISHED or t.state == STATE.PRUNED:
                self._seen.add(t.number)  # not a tunesvc measurement: nothing to learn

    def mark_seen(self, number: int) -> None:
        self._seen.add(number)

    def _config_of(self, trial) -> Config | None:
        if CONFIG in trial.user_attrs:
            return Config(json.loads(trial.user_attrs[CONFIG]))
        try:
            config = Config({n: trial.params[n] for n in self.space.names})
        except KeyError:
            return None
        return config if config in self.space else None
