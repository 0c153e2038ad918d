"""An ensemble that shifts the budget to whichever technique is paying off, and re-spreads when
none is.

Techniques share one record of what was measured: a density model over the
whole space (``density``), a neighbourhood search around the best so far
(``local``), a particle swarm (``swarm``, :mod:`.swarm`: global, drawn to good
regions, and it makes the opening picks), uniform random picks (``random``), a
neighbourhood search around the best config found since the last restart
(``hop``: basin hopping), and the transfer seeds (``transfer``, present while
seeds are left). Each step a bandit picks one by discounted Thompson sampling:
a technique is rewarded when its pick lands among the fastest ``top`` fraction
measured so far, and old rewards fade, so the budget follows whichever
technique works *now*.

Every technique can settle in one basin while a better one lies elsewhere; the
bandit cannot see that, since nothing pays. The stall guard (:mod:`.guard`)
can: after a run of evaluations without a real improvement it re-spreads. A
burst of random picks, the swarm scattered afresh with its best forgotten,
``hop`` moved to the best of the new picks, and the bandit's memory cleared,
so every technique gets a fresh chance from the new starting points.

Transfer seeds are one arm among the others, not a prefix: the first seed is
measured first (one evaluation); the rest only while the bandit finds that
seeds pay, so bad seeds cost a few evaluations and good ones steer the local
techniques at once (the best seed becomes the best so far).

The default settings (``DEFAULTS``) were chosen by cross-validation over kernel
families on recorded spaces (benchmarks/cv_search.py, docs/benchmarks.md).
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from ..errors import UsageError
from ..types import Measurement
from .base import Strategy
from .density import DensityModel
from .gp import Model
from .guard import StallGuard
from .local import steps_from
from .observed import Observations
from .space import SearchSpace
from .swarm import SwarmStrategy

ARMS = ("density", "local", "swarm", "random", "hop", "gp")


class Defaults(TypedDict):
    """The ensemble's default settings, each typed as its parameter is."""

    start: int
    discount: float
    top: float
    spread: int
    arms: tuple[str, ...]
    patience: int
    patience_fraction: float
    burst: int
    start_fraction: float
    patience_budget: float
    design: str
    far_pool: int
    respread: str


#: the settings used unless told otherwise: chosen by cross-validation (docs/benchmarks.md, issue 12)
DEFAULTS = Defaults(start=8, discount=0.95, top=0.1, spread=1, arms=("density", "local", "swarm", "hop"),
                    patience=50, patience_fraction=0.5, burst=5, start_fraction=0.05, patience_budget=0.0,
                    design="far", far_pool=0, respread="random")
DEFAULT_ARMS = DEFAULTS["arms"]


class _Ring:
    """Unseen configs nearest to a centre, ring by ring; the distances are cached per centre."""

    def __init__(self, space: SearchSpace, tiebreak: np.ndarray):
        self.space, self.tiebreak = space, tiebreak
        self.center: int | None = None
        self.steps: np.ndarray | None = None

    def nearest(self, center: int, unseen: np.ndarray) -> int:
        if center != self.center:  # the distances change only when the centre does
            self.center, self.steps = center, steps_from(self.space, center) + self.tiebreak
        assert self.steps is not None  # set with the centre
        return int(np.argmin(np.where(unseen, self.steps, np.inf)))


class EnsembleStrategy(Strategy):
    name = "ensemble"
    seeds_first = False  # seeds are the transfer arm's, weighed like any technique

    def __init__(self, space: SearchSpace, seed: int | None = None, start: int = DEFAULTS["start"],
                 discount: float = DEFAULTS["discount"], top: float = DEFAULTS["top"], spread: int = DEFAULTS["spread"],
                 arms: tuple[str, ...] = DEFAULT_ARMS, patience: int = DEFAULTS["patience"],
                 patience_fraction: float = DEFAULTS["patience_fraction"], burst: int = DEFAULTS["burst"],
                 scatter: str = "forget", reset_bandit: bool = True, prior: dict | None = None,
                 transfer: str = "arm", lengthscale: float = 0.5, fit: bool = False, lead: int = 0,
                 clip: float = 1.0, start_fraction: float = DEFAULTS["start_fraction"],
                 patience_budget: float = DEFAULTS["patience_budget"], design: str = DEFAULTS["design"],
                 far_pool: int = DEFAULTS["far_pool"], respread: str = DEFAULTS["respread"], **options):
        super().__init__(space, seed)
        self.seeds_first = transfer == "first"  # "first": every seed before anything else (the old way)
        if not arms or set(arms) - set(ARMS):
            raise UsageError(f"ensemble arms must be some of {', '.join(ARMS)}; got {', '.join(arms) or 'none'}")
        self.arms = tuple(arms) + ("transfer",)  # the last is active only while seeds are left
        # the swarm arm is a whole swarm strategy sharing this one's record of seen configs
        self.swarm = SwarmStrategy(space, seed) if "swarm" in arms else None
        if self.swarm is not None:
            self.swarm.unseen = self.unseen
        self.obs = Observations(space)
        self.model = DensityModel(space)
        self.gp = Model(space, self.rng, lengthscale, fit, clip) if "gp" in arms else None
        self.start, self.discount, self.top, self.spread, self.burst = start, discount, top, spread, burst
        self.lead = lead  # after the opening, this many picks by the first arm alone (the model, on small budgets)
        self.guard = StallGuard(patience, patience_fraction)
        self.start_fraction, self.patience_budget = start_fraction, patience_budget
        self.far_pool = far_pool
        self.respread = respread
        self.design = design  # "far": the opening's picks after the first are space-filling, not random
        self._far_codes: np.ndarray | None = None
        self._far_dist: np.ndarray | None = None
        self._far_seen = 0
        self.scatter, self.reset_bandit = scatter, reset_bandit
        # pseudo-wins an arm starts with (and gets again when the bandit is cleared)
        self.prior = np.array([float((prior or {}).get(a, 0.0)) for a in self.arms])
        self.wins = self.prior.copy()
        self.losses = np.zeros(len(self.arms))
        self.tiebreak = self.rng.random(len(space)) * 1e-3
        self._asked: dict[int, int] = {}  # config index -> arm that proposed it
        self._local_ring, self._hop_ring = _Ring(space, self.tiebreak), _Ring(space, self.tiebreak)
        self._burst_left = 0
        self._hop_best: tuple[float, int] | None = None  # (time, index) of the best since the last restart
        self._first_seed_done = False
        self._seeds_pay = True  # until a seed fails to rank among the best measured
        self._first_seed: int | None = None
        #: the technique behind each proposal, in order ("restart" for the stall guard's random picks)
        self.techniques: list[str] = []

    # ---- proposing ----------------------------------------------------------------------
    def propose(self) -> int:
        name = self._choose()
        i = getattr(self, "_" + name)()
        self.techniques.append(name)
        if name in self.arms:
            self._asked[i] = self.arms.index(name)
        return i

    def _choose(self) -> str:
        """The technique for the next pick: the first seed, the restart burst, the opening, or the bandit."""
        if self.preferred and not self._first_seed_done:
            self._first_seed_done = True
            return "transfer"
        if self._burst_left > 0:
            self._burst_left -= 1
            return "restart"
        if len(self.obs) < self.opening() or self.obs.best_index is None:
            if self.design == "far" and len(self.obs):
                return "far"
            return "swarm" if self.swarm is not None else "random"
        if len(self.obs) < self.opening() + self.lead and not self.guard.restarts:
            return self.arms[0]
        active = np.array([a != "hop" or self._hop_best is not None for a in self.arms])
        active[-1] = self._seeds_pay and any(self.unseen[i] for i in self.preferred)
        draw = np.where(active, self.rng.beta(self.wins + 1.0, self.losses + 1.0), -1.0)
        return self.arms[int(np.argmax(draw))]

    def opening(self) -> int:
        """Random picks before any technique is weighed: ``start``, or, with a known budget and
        ``start_fraction``, that fraction of it within [2, start]: on a space where random search
        needs a handful of picks, eight blind ones would spend most of the budget (issue 12)."""
        if self.budget is None or not self.start_fraction:
            return self.start
        return int(min(self.start, max(2, math.ceil(self.start_fraction * self.budget))))

    def expect(self, budget: int | None) -> None:
        super().expect(budget)
        if budget is not None and self.patience_budget and self.guard.patience > 0:
            self.guard.patience = max(self.guard.patience_floor, int(math.ceil(self.patience_budget * budget)))

    def _far(self) -> int:
        """A space-filling opening pick: an unseen config among the farthest (in value-index
        steps, each parameter scaled to [0, 1]) from every config seen so far. Configs side by side
        tend to run alike, so spread-out picks find a good one in fewer draws than independent
        random ones (stratified sampling), which is what a budget of a dozen needs."""
        if self._far_codes is None:
            hi = np.maximum(self.space.codes.max(axis=0), 1).astype(np.float64)
            self._far_codes = self.space.codes / hi
            self._far_dist = np.full(len(self.space), np.inf)
        codes, dist = self._far_codes, self._far_dist
        assert dist is not None  # set with the codes
        for i in self.obs.index[self._far_seen:]:
            dist = np.minimum(dist, np.abs(codes - codes[i]).sum(axis=1))
        self._far_dist = dist
        self._far_seen = len(self.obs.index)
        if self.far_pool:  # Mitchell's best candidate: the farthest of a few random unseen configs,
            # spread out without being pushed into the corners of the space
            pool = self.rng.choice(np.flatnonzero(self.unseen), size=min(self.far_pool, int(self.unseen.sum())), replace=False)
            return int(pool[np.argmax(dist[pool])])
        d = np.where(self.unseen, dist + self.tiebreak, -np.inf)
        return int(np.argmax(d))

    def _random(self) -> int:
        return int(self.rng.choice(np.flatnonzero(self.unseen)))

    def _restart(self) -> int:
        """The restart burst's picks, credited to no technique: random, or space-filling (far from
        everything measured, so a search stuck in one basin looks where it has not)."""
        return self._far() if self.respread == "far" else self._random()

    def _swarm(self) -> int:
        assert self.swarm is not None  # the arm exists only with its swarm
        return self.swarm.propose()

    def _transfer(self) -> int:
        i = self.next_seed()
        if self._first_seed is None:
            self._first_seed = i
        return self._random() if i is None else i

    def _density(self) -> int:
        # one of the few best-scoring configs, not always the very best: the model is rough,
        # and a little spread keeps it from spending many picks on one mistaken ridge
        s = np.where(self.unseen, self.model.scores(self.obs) + self.tiebreak * 1e-3, -np.inf)
        k = min(self.spread, int(self.unseen.sum()))
        top = np.argpartition(-s, k - 1)[:k]
        return int(self.rng.choice(top))

    def _gp(self) -> int:
        assert self.gp is not None  # the arm exists only with its model
        i = self.gp.best_unseen(self.unseen)
        return self._random() if i is None else i

    def _local(self) -> int:
        assert self.obs.best_index is not None  # the bandit's arms pick only once something ran
        return self._local_ring.nearest(self.obs.best_index, self.unseen)

    def _hop(self) -> int:
        assert self._hop_best is not None  # the arm is active only with a best since the restart
        return self._hop_ring.nearest(self._hop_best[1], self.unseen)

    # ---- learning -----------------------------------------------------------------------
    def observe(self, index: int, m: Measurement) -> None:
        y = self.obs.values() if len(self.obs) >= self.opening() else None
        self.obs.add(index, m)
        if self.swarm is not None:
            self.swarm.observe(index, m)
        if self.gp is not None:
            self.gp.tell(index, m)
        self.guard.observe(m.ok, m.time)
        if m.ok and self.guard.restarts and (self._hop_best is None or m.time < self._hop_best[0]):
            self._hop_best = (m.time, index)
        arm = self._asked.pop(index, None)
        if arm is not None and y is not None:  # told from outside (an earlier run): no technique to credit
            value = math.log(max(m.time, 1e-30)) if m.ok else math.inf
            k = int(self.top * (len(y) - 1))
            won = value <= np.partition(y, k)[k]
            self.wins *= self.discount
            self.losses *= self.discount
            self.wins[arm] += won
            self.losses[arm] += not won
            if self.arms[arm] == "transfer" and not won:
                self._seeds_pay = False  # one seed that does not pay ends the transfer: bad seeds cost a few picks
        if len(self.obs) == self.opening() and self._first_seed is not None:
            self._judge_first_seed()
        if self.guard.stalled:
            self._respread()

    def _judge_first_seed(self) -> None:
        """The first seed is measured before there is anything to compare it with: once the opening
        is done, it must rank among the ``top`` fraction of it, or the other seeds are not taken."""
        y = self.obs.values()
        k = int(self.top * (len(y) - 1))
        first = y[self.obs.index.index(self._first_seed)] if self._first_seed in self.obs.index else math.inf
        if first > np.partition(y, k)[k]:
            self._seeds_pay = False

    def _respread(self) -> None:
        """The stall guard fired: random restarts, a scattered swarm, hop to the new picks' best,
        and a bandit that has forgotten which technique used to pay."""
        self.guard.restarted()
        self._burst_left = self.burst
        self._hop_best = None
        if self.swarm is not None and self.scatter == "forget":
            self.swarm.restart()
        elif self.swarm is not None and self.scatter == "keep":
            self.swarm.swarm.spread(self.unseen)
        if self.reset_bandit:
            self.wins[:] = self.prior
            self.losses[:] = 0.0
