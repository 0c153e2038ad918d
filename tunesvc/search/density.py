"""A Parzen-estimator search over the valid configs themselves (TPE's idea, without projection).

The measured configs are split into the fastest fraction ("good") and the rest;
for each parameter, a smoothed histogram over its ordered values is built for
both groups (neighbouring values share weight, so "bigger tile" is near). Every
unseen valid config is scored by the sum over parameters of
log p_good(value) - log p_rest(value), and the best-scoring one is measured.
Scoring the valid configs directly means no proposal is ever invalid and the
model is never told about a config that was not measured. Failures count as
the slowest configs, so regions that fail look bad.
"""

from __future__ import annotations

import math

import numpy as np

from ..types import Measurement
from .base import Strategy
from .observed import Observations
from .ranges import check
from .space import SearchSpace


def smoothing_matrix(n_values: int, floor: float = 1.0) -> np.ndarray:
    """Row-normalised Gaussian weights over value indices (bandwidth ~ a tenth of the range, at least
    ``floor`` steps: with a floor of one step a neighbour gets 0.6 of a value's weight, which blurs a
    parameter of three or four unrelated choices into one; half a step keeps them apart)."""
    idx = np.arange(n_values, dtype=np.float64)
    width = max(floor, n_values / 10.0)
    k = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / width) ** 2)
    return k / k.sum(axis=1, keepdims=True)


class DensityModel:
    """Per-parameter good/rest densities over a space's value indices."""

    def __init__(self, space: SearchSpace, gamma: float = 0.15, max_good: int = 25, bandwidth: float = 1.0):
        self.space = space
        self.gamma = gamma
        self.max_good = max_good
        self.kernels = [smoothing_matrix(len(d.values), bandwidth) for d in space.dims]
        # one contiguous array per parameter: gathering from a column of the codes matrix is strided
        self.columns = [np.ascontiguousarray(space.codes[:, j], dtype=np.intp) for j in range(len(space.dims))]

    def scores(self, obs: Observations) -> np.ndarray:
        """log p_good - log p_rest of every config of the space."""
        # Failures are left out here: they often sit right beside the fastest configs (the
        # biggest tiles that still fit), and counting them as slow would steer away from those.
        y = np.array(obs.log_time, dtype=np.float64)
        ok = ~np.isnan(y)
        y, measured = y[ok], np.asarray(obs.index, dtype=np.int64)[ok]
        order = np.argsort(y, kind="stable")
        n_good = min(self.max_good, max(1, int(math.ceil(self.gamma * len(y)))))
        good, rest = measured[order[:n_good]], measured[order[n_good:]]
        total = np.zeros(len(self.space))
        for kernel, codes in zip(self.kernels, self.columns):
            # the ratio per value first (a few numbers), then one gather over the space
            ratio = np.log(self._density(codes[good], kernel)) - np.log(self._density(codes[rest], kernel))
            total += ratio[codes]
        return total

    @staticmethod
    def _density(codes: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        n = kernel.shape[0]
        counts = np.bincount(codes, minlength=n).astype(np.float64)
        prior = 1.0  # one pseudo-observation spread evenly: no value is ever impossible
        return (counts @ kernel + prior / n) / (counts.sum() + prior)


class DensityStrategy(Strategy):
    """Measure the unseen config the good/rest density ratio likes best."""

    name = "density"

    def __init__(self, space: SearchSpace, seed: int | None = None, start: int = 8, **options):
        check("density", start=start)
        super().__init__(space, seed)
        self.obs = Observations(space)
        self.model = DensityModel(space)
        self.start = start
        self.tiebreak = self.rng.random(len(space)) * 1e-6

    def propose(self) -> int:
        if len(self.obs) < self.start or self.obs.best_index is None:
            return int(self.rng.choice(np.flatnonzero(self.unseen)))
        return self.best_unseen()

    def best_unseen(self) -> int:
        s = self.model.scores(self.obs) + self.tiebreak
        return int(np.argmax(np.where(self.unseen, s, -np.inf)))

    def observe(self, index: int, m: Measurement) -> None:
        self.obs.add(index, m)
