"""Bayesian optimisation over the valid configs: a Gaussian process on value indices, expected improvement.

The model is a Gaussian process over the configs' unit-scaled value indices (a
Matérn 5/2 kernel: nearby configs run alike, but not too smoothly) fitted to the
log times measured so far; the next config is the unseen one with the largest
expected improvement over the best so far. Unlike a density model it knows what
it has not looked at: a region never measured keeps its prior uncertainty, so it
is eventually looked at, which is what gets a search out of a good basin that is
not the best one (Willemsen et al. 2021 found Bayesian optimisation the most
sample-efficient strategy on GPU tuning spaces).

Only valid configs are ever scored, so nothing invalid is proposed or told. The
posterior is kept for every config of the space and updated by one row per
measurement (a rank-one Cholesky step), so a step costs O(measured x configs),
not a refit. Failed configs are not told to the model (they cost no budget in
replay and have no time to fit); they are marked seen, so never proposed again.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from ..types import Measurement
from .base import Strategy
from .ranges import check
from .space import SearchSpace

_SQRT5 = math.sqrt(5.0)


_blas = None


def one_blas_thread():
    """A context in which BLAS uses one thread (threadpoolctl, where installed). The products here
    are small; threaded, they are no faster, and OpenBLAS's threads spin on after each one, taking
    cores from the kernel the worker is about to time (on a CPU device) or from other processes."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController()
        except ImportError:
            _blas = False
    return _blas.limit(limits=1, user_api="blas") if _blas else contextlib.nullcontext()


def matern52(r: np.ndarray, lengthscale: float) -> np.ndarray:
    s = _SQRT5 * r / lengthscale
    return (1.0 + s + s * s / 3.0) * np.exp(-s)


class Posterior:
    """A Gaussian process posterior over every config of a space, grown one observation at a time.

    Kept as the rows of L^-1 K(observed, all) (L the Cholesky factor of the observed configs'
    kernel matrix) and L^-1 itself, each measurement adding one row to both: the variance of
    every config drops by the new row squared, and the mean is those rows times L^-1 y, for
    whatever transform of the times y is (see ``predict``).
    """

    def __init__(self, x: np.ndarray, lengthscale: float = 0.5, noise: float = 1e-4):
        self.x = np.asarray(x, dtype=np.float64)  # every config's unit-scaled value indices (SearchSpace.unit)
        self.lengthscale, self.noise = lengthscale, noise
        self._rows = np.zeros((16, len(self.x)))  # grown by doubling: one copy per doubling, not per row
        self._linv = np.zeros((16, 16))
        self.var = np.ones(len(self.x))  # prior variance k(0) = 1, less what the observations explain
        self.y: list[float] = []
        self.index: list[int] = []

    @property
    def rows(self) -> np.ndarray:
        return self._rows[: len(self.index)]

    def add(self, i: int, y: float) -> None:
        """Condition on config ``i`` having log time ``y``."""
        with one_blas_thread():
            self._add(i, y)

    def _add(self, i: int, y: float) -> None:
        n = len(self.index)
        l_row = self.rows[:, i].copy()  # L^-1 k(observed, x_i): the new row of L, off the diagonal
        d = math.sqrt(max(1.0 + self.noise - float(l_row @ l_row), 1e-10))
        k_new = matern52(np.sqrt(((self.x - self.x[i]) ** 2).sum(axis=1)), self.lengthscale)
        new = (k_new - l_row @ self.rows) / d
        if n == len(self._rows):
            self._rows = np.vstack([self._rows, np.zeros_like(self._rows)])
            grown = np.zeros((2 * n, 2 * n))
            grown[:n, :n] = self._linv
            self._linv = grown
        self._rows[n] = new
        # the inverse of [[L, 0], [l, d]] is [[L^-1, 0], [-l L^-1 / d, 1 / d]]
        self._linv[n, :n] = -(l_row @ self._linv[:n, :n]) / d
        self._linv[n, n] = 1.0 / d
        self.var = np.maximum(self.var - new * new, 1e-12)
        self.y.append(y)
        self.index.append(i)

    def log_likelihood(self, lengthscale: float) -> float:
        """Log marginal likelihood of the standardised observations under ``lengthscale``."""
        x, y = self.x[self.index], np.asarray(self.y)
        y = (y - y.mean()) / (y.std() or 1.0)
        r = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2))
        try:
            chol = np.linalg.cholesky(matern52(r, lengthscale) + self.noise * np.eye(len(y)))
        except np.linalg.LinAlgError:
            return -math.inf
        alpha = np.linalg.solve(chol, y)
        return float(-0.5 * alpha @ alpha - np.log(np.diag(chol)).sum())

    def refit(self, lengthscales) -> None:
        """Take the lengthscale the observations make most likely; rebuild the posterior if it changed
        (one pass over the observations, O(observed² x configs): done rarely, at doubling counts)."""
        best = max(lengthscales, key=self.log_likelihood)
        if best == self.lengthscale:
            return
        pairs = list(zip(self.index, self.y))
        type(self).__init__(self, self.x, best, self.noise)
        for i, y in pairs:
            self.add(i, y)

    def predict(self, clip: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean, standard deviation) of every config and the best observed value, in standardised
        units of the log times capped at their ``clip`` quantile.

        The cap is why this finds what a plain fit misses: the slow tail of a tuning space (configs
        ten or a hundred times slower) would otherwise set the scale, the best config would sit
        several standard deviations below the mean, and every region not yet measured would look
        hopeless next to the incumbent's basin (expected improvement ~0 there). Capped at the median,
        the model spends its resolution on the fast half, where the decisions are.
        """
        y = np.asarray(self.y)
        if clip < 1.0 and len(y) > 2:
            y = np.minimum(y, np.quantile(y, clip))
        centre, scale = float(y.mean()), float(y.std()) or 1.0
        n = len(y)
        with one_blas_thread():
            z = self._linv[:n, :n] @ ((y - centre) / scale)
            mean = self.rows.T @ z
        return mean, np.sqrt(self.var), (float(y.min()) - centre) / scale


#: lengthscales the marginal likelihood chooses among (unit-scaled value indices)
LENGTHSCALES = (0.1, 0.15, 0.25, 0.4, 0.6, 1.0)


def refit_due(n: int) -> bool:
    """Refit the lengthscale at 8, 16, 32, ... observations: often early, when it matters, rarely later."""
    return n >= 8 and n & (n - 1) == 0


def normal_cdf(u: np.ndarray) -> np.ndarray:
    """Phi(u), to 1e-7 (Abramowitz & Stegun 7.1.26 for erf), without scipy."""
    x = np.abs(u) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(u) * erf)


def expected_improvement(mean: np.ndarray, sd: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """E[max(best - f - xi, 0)] for f ~ N(mean, sd²) (minimising)."""
    gain = best - mean - xi
    u = gain / sd
    pdf = np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    return gain * normal_cdf(u) + sd * pdf


#: a space larger than this is modelled on a random subset of this many configs (memory: one row
#: of this many floats per measurement)
MAX_CONFIGS = 40_000


class Model:
    """The Gaussian process of a search: told outcomes, it names the unseen config of the largest
    expected improvement. A huge space is modelled on a fixed random subset of ``MAX_CONFIGS``
    configs (the other techniques of an ensemble still reach the rest)."""

    def __init__(self, space: SearchSpace, rng: np.random.Generator, lengthscale: float = 0.5, fit: bool = True,
                 clip: float = 0.5):
        n = len(space)
        self.subset = None if n <= MAX_CONFIGS else np.sort(rng.choice(n, MAX_CONFIGS, replace=False))
        self.position: np.ndarray | None = None
        if self.subset is not None:
            self.position = position = np.full(n, -1, dtype=np.int64)
            position[self.subset] = np.arange(MAX_CONFIGS)
        self.gp = Posterior(space.unit(self.subset), lengthscale)
        self.fit, self.clip = fit, clip  # fit: choose the lengthscale by marginal likelihood as outcomes come in
        self.tiebreak = rng.random(len(self.gp.x)) * 1e-9

    def __len__(self) -> int:
        return len(self.gp.y)

    def tell(self, index: int, m: Measurement) -> None:
        """Failures are not told: they have no time to fit, and cost no budget in replay."""
        pos = index if self.position is None else int(self.position[index])
        if m.ok and pos >= 0:
            self.gp.add(pos, math.log(max(m.time, 1e-30)))
            if self.fit and refit_due(len(self.gp.y)):
                self.gp.refit(LENGTHSCALES)

    def best_unseen(self, unseen: np.ndarray, xi: float = 0.0) -> int | None:
        """The unseen config of the largest expected improvement; None before any outcome, or when the
        modelled configs are all seen."""
        mask = unseen if self.subset is None else unseen[self.subset]
        if not self.gp.y or not mask.any():
            return None
        mean, sd, best = self.gp.predict(self.clip)
        pos = int(np.argmax(np.where(mask, expected_improvement(mean, sd, best, xi) + self.tiebreak, -np.inf)))
        return pos if self.subset is None else int(self.subset[pos])


class BayesStrategy(Strategy):
    """Expected improvement of a Gaussian process over the unseen valid configs."""

    name = "bo"

    def __init__(self, space: SearchSpace, seed: int | None = None, start: int = 5, lengthscale: float = 0.5,
                 xi: float = 0.0, fit: bool = True, clip: float = 0.5, **options):
        check("bo", start=start, lengthscale=lengthscale, xi=xi, clip=clip)
        super().__init__(space, seed)
        self.model = Model(space, self.rng, lengthscale, fit, clip)
        self.start, self.xi = start, xi

    def propose(self) -> int:
        i = self.model.best_unseen(self.unseen, self.xi) if len(self.model) >= self.start else None
        return int(self.rng.choice(np.flatnonzero(self.unseen))) if i is None else i

    def observe(self, index: int, m: Measurement) -> None:
        self.model.tell(index, m)
