"""Local search: measure the unseen config nearest to the best so far.

Nearness counts steps in each parameter's ordered values (one tile size up,
a flag flipped: one step each), so the neighbourhood of the best config is
searched outward ring by ring: first every config one step away, then two.
Each new best moves the centre. Ties are broken at random, per run.
A few random configs first give it somewhere to start, and a small share of
random picks keeps it from circling one basin forever.
"""

from __future__ import annotations

import numpy as np

from ..types import Measurement
from .base import Strategy
from .observed import Observations
from .ranges import check
from .space import SearchSpace


def steps_from(space: SearchSpace, index: int) -> np.ndarray:
    """Value-index steps from config ``index`` to every config of the space."""
    return np.abs(space.codes - space.codes[index]).sum(axis=1).astype(np.float64)


class LocalStrategy(Strategy):
    """Best-first neighbourhood search around the best config so far."""

    name = "local"

    def __init__(self, space: SearchSpace, seed: int | None = None, start: int = 3, explore: float = 0.05, **options):
        check("local", start=start, explore=explore)
        super().__init__(space, seed)
        self.obs = Observations(space)
        self.start = start
        self.explore = explore
        self.tiebreak = self.rng.random(len(space)) * 1e-3  # below one step: only orders equals

    def propose(self) -> int:
        if self.obs.best_index is None or len(self.obs) < self.start or self.rng.random() < self.explore:
            return int(self.rng.choice(np.flatnonzero(self.unseen)))
        return self.nearest_unseen(self.obs.best_index)

    def nearest_unseen(self, center: int) -> int:
        d = steps_from(self.space, center) + self.tiebreak
        return int(np.argmin(np.where(self.unseen, d, np.inf)))

    def observe(self, index: int, m: Measurement) -> None:
        self.obs.add(index, m)
