"""The strategy interface: construct over a space, ``ask`` for a config, ``tell`` its outcome.

Strategies only ever see valid configs (the space holds nothing else), never
get a config twice, and are told every outcome, failures included, so they can
steer away from them. The same strategy objects drive live tuning and replay.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..types import Config, Measurement
from .space import SearchSpace


class SpaceExhausted(Exception):
    """Raised by ``propose`` when no unseen config is left (e.g. other workers took them)."""


class Strategy(ABC):
    name = ""
    #: whether the strategy keeps its state in an Optuna storage (so several processes can share it)
    keeps_state = False
    #: whether ``ask`` measures every preferred config before the strategy's own proposals; a
    #: strategy that weighs seeds against its other techniques (the ensemble) sets it False and
    #: takes them with ``next_seed`` when it chooses to
    seeds_first = True

    def __init__(self, space: SearchSpace, seed: int | None = None, **options):
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        #: True where a config has not been asked or told yet
        self.unseen = np.ones(len(space), dtype=bool)
        #: configs to try before the strategy's own proposals (transfer seeds), best first
        self.preferred: list[int] = []
        #: the feasible evaluations this search may make, where known (``expect``); None when the
        #: search stops on time or by hand
        self.budget: int | None = None

    def expect(self, budget: int | None) -> None:
        """Say how many feasible evaluations the search will get (``--trials``, a replay's
        budget), before the first ask. Kernel Tuner's strategies get it too (``max_fevals``):
        a strategy may size its opening and its patience by it."""
        self.budget = budget if budget is None else max(1, int(budget))

    def prefer(self, configs) -> None:
        """Seeds to measure, best first (e.g. the best known for related problems): before the
        strategy's own proposals, or, where ``seeds_first`` is False, when the strategy decides;
        configs outside the space are ignored, so a seed can never be an invalid proposal."""
        for c in configs:
            i = self.space.index.get(c)
            if i is not None and i not in self.preferred:
                self.preferred.append(i)

    def next_seed(self) -> int | None:
        """Index of the next preferred config not seen yet (taken off the list), or None."""
        while self.preferred:
            i = self.preferred.pop(0)
            if self.unseen[i]:
                return i
        return None

    @abstractmethod
    def propose(self) -> int:
        """Index of the next config to measure; only called while some config is unseen."""

    def ask(self) -> Config | None:
        """The next config to measure, or None when every config has been seen."""
        if not self.unseen.any():
            return None
        i = self.next_seed() if self.seeds_first else None
        if i is None:
            try:
                i = self.propose()
            except SpaceExhausted:
                return None
        self.unseen[i] = False
        return self.space.configs[i]

    def tell(self, config: Config, measurement: Measurement) -> None:
        """Record an outcome: of a config this strategy asked for, or one known beforehand."""
        i = self.space.index.get(config)
        if i is not None:
            self.unseen[i] = False
            self.observe(i, measurement)

    def observe(self, index: int, measurement: Measurement) -> None:
        """Hook for strategies that learn from outcomes; the default learns nothing."""
