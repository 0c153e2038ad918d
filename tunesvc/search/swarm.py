"""Particle swarm search over the valid configs, in value-index units.

Each particle flies through the box of value indices (one unit = one step of a
parameter's ordered values) and is snapped to the nearest valid config; it is
pulled towards its own best config and the swarm's best. Snapping onto a config
that was already measured costs nothing: the particle reads the known outcome
and flies on, so only unseen configs are proposed, never a repeat. This is why
swarms suit constrained tuning spaces (Kernel Tuner's PSO works the same way,
over its space of valid configs): every landing point is valid, and revisiting
the good region is free. A failed config scores as infinitely slow, so the
particle's pull stays on its last working best.

When the swarm has collapsed (a long run of landings on known configs), the
unseen config nearest to the best so far is measured instead (a local step),
and the swarm is re-spread over random unseen configs, keeping the best.
"""

from __future__ import annotations

import math

import numpy as np

from ..types import Measurement
from .base import SpaceExhausted, Strategy
from .local import steps_from
from .ranges import check
from .space import SearchSpace


class Swarm:
    """The particles: positions and velocities in value-index units, and their bests."""

    def __init__(self, space: SearchSpace, rng: np.random.Generator, size: int,
                 inertia: float, cognitive: float, social: float):
        self.space, self.rng = space, rng
        self.size = size
        self.w, self.c1, self.c2 = inertia, cognitive, social
        self.hi = np.array([len(d.values) - 1 for d in space.dims], dtype=np.float64)
        self.codes = space.codes.astype(np.float64)
        self.lookup = {tuple(row): i for i, row in enumerate(space.codes.tolist())}
        self.tiebreak = rng.random(len(space)) * 1e-6
        self.best_value, self.best_pos = math.inf, None

    def spread(self, unseen: np.ndarray) -> None:
        """Put every particle on a random unseen config with a random velocity (Kernel Tuner
        starts its particles on valid configs too, with velocities up to the widest range)."""
        pool = np.flatnonzero(unseen)
        start = self.rng.choice(pool, size=min(self.size, len(pool)), replace=False)
        start = np.concatenate([start, self.rng.choice(len(self.space), size=self.size - len(start))])
        self.pos = self.codes[start].copy()
        self.vel = self.rng.uniform(-1.0, 1.0, self.pos.shape) * max(1.0, self.hi.max())
        self.own_value = np.full(self.size, math.inf)
        self.own_pos = self.pos.copy()

    def scatter(self, unseen: np.ndarray) -> None:
        """A fresh spread that also forgets the swarm's best, so the particles explore instead of
        flying straight back to the basin the search is stuck in (the stall guard's restart)."""
        self.best_value, self.best_pos = math.inf, None
        self.spread(unseen)

    def snap(self, k: int) -> int:
        """The valid config nearest to particle ``k`` (rounded indices when valid, else nearest in L1)."""
        i = self.lookup.get(tuple(np.rint(self.pos[k]).astype(np.int64).tolist()))
        if i is not None:
            return i
        return int(np.argmin(np.abs(self.codes - self.pos[k]).sum(axis=1) + self.tiebreak))

    def land(self, k: int, index: int, value: float) -> None:
        """Particle ``k`` landed on config ``index`` with (log) time ``value``; update bests and fly on."""
        at = self.codes[index]
        if value < self.own_value[k]:
            self.own_value[k], self.own_pos[k] = value, at
        self.know(index, value)
        r1, r2 = self.rng.random(2)
        pull_own = self.c1 * r1 * (self.own_pos[k] - self.pos[k])
        pull_best = self.c2 * r2 * ((self.best_pos if self.best_pos is not None else at) - self.pos[k])
        self.vel[k] = self.w * self.vel[k] + pull_own + pull_best
        self.pos[k] = np.clip(self.pos[k] + self.vel[k], 0.0, self.hi)

    def know(self, index: int, value: float) -> None:
        if value < math.inf and value <= self.best_value:
            self.best_value, self.best_pos = value, self.codes[index]


class SwarmStrategy(Strategy):
    """Particle swarm optimisation; revisits are free, so it only ever proposes unseen configs."""

    name = "swarm"

    def __init__(self, space: SearchSpace, seed: int | None = None, particles: int = 20, inertia: float = 0.5,
                 cognitive: float = 2.0, social: float = 1.5, patience: int = 30, **options):
        check("swarm", particles=particles, inertia=inertia, cognitive=cognitive, social=social, patience=patience)
        super().__init__(space, seed)
        size = max(1, min(particles, len(space) // 2))
        self.swarm = Swarm(space, self.rng, size, inertia, cognitive, social)
        self.swarm.spread(self.unseen)
        self.known: dict[int, float] = {}  # config index -> log time, inf for a failure
        self.best_index: int | None = None
        self.patience = patience * size  # free landings in a row before the swarm counts as collapsed
        self._turn = 0
        self._waiting: dict[int, int] = {}  # config index -> particle that proposed it

    def propose(self) -> int:
        for _ in range(self.patience):
            k = self._turn
            self._turn = (k + 1) % self.swarm.size
            i = self.swarm.snap(k)
            if self.unseen[i]:
                self._waiting[i] = k
                return i
            # known: free; pending elsewhere (another worker): fly on as if it failed
            self.swarm.land(k, i, self.known.get(i, math.inf))
        return self._collapsed()

    def _collapsed(self) -> int:
        """A local step beside the best so far, then a fresh spread of the particles."""
        if not self.unseen.any():
            raise SpaceExhausted
        self.swarm.spread(self.unseen)
        if self.best_index is None:
            return int(self.rng.choice(np.flatnonzero(self.unseen)))
        d = steps_from(self.space, self.best_index) + self.swarm.tiebreak
        return int(np.argmin(np.where(self.unseen, d, np.inf)))

    def restart(self) -> None:
        """Scatter the particles over unseen configs and forget the swarm's best (see Swarm.scatter);
        each particle's own best goes too, so only what they find from here on pulls them."""
        if self.unseen.any():
            self.swarm.scatter(self.unseen)

    def observe(self, index: int, m: Measurement) -> None:
        value = math.log(max(m.time, 1e-30)) if m.ok else math.inf
        self.known[index] = value
        if m.ok and (self.best_index is None or value < self.known[self.best_index]):
            self.best_index = index
        k = self._waiting.pop(index, None)
        if k is None:  # told from outside (a seed, another worker): the swarm learns the best
            self.swarm.know(index, value)
        else:
            self.swarm.land(k, index, value)
