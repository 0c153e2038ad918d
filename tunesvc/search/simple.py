"""Strategies that need no model: every config in order, or uniformly at random."""

from __future__ import annotations

import numpy as np

from .base import Strategy


class GridStrategy(Strategy):
    """Every valid config, the default first, then in the space's order."""

    name = "grid"

    def propose(self) -> int:
        d = self.space.default
        if d is not None and self.unseen[self.space.index[d]]:
            return self.space.index[d]
        return int(np.argmax(self.unseen))


class RandomStrategy(Strategy):
    """Uniformly at random among the configs not yet measured."""

    name = "random"

    def propose(self) -> int:
        return int(self.rng.choice(np.flatnonzero(self.unseen)))
