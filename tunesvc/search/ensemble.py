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
seeds pay. How far a seed may steer is ``transfer`` (``TRANSFER``): with "arm"
the best seed becomes the best so far, which every technique steers by; a seed
that is good without being the best then draws the search into its basin, and
that cost more than the seed itself on some device pairs (issue 12: +105
evaluations). With "probe" and "near" a seed is a result (it counts as found)
but no technique is told of it, so the search runs as it would unseeded, a few
evaluations later; "near" also measures the configs beside the best seed,
``seed_picks`` transfer evaluations in all at most, so a seed one step from a
fast config still pays. The cost of bad seeds is bounded by construction.

On a short known budget (at most ``short_budget`` evaluations) the bandit is
not worth its learning: the model (the first arm) makes every pick after the
opening (:meth:`EnsembleStrategy.leading`). ``gamma`` is the density model's
fastest fraction (its "good" configs).

The default settings (``DEFAULTS``) were chosen by cross-validation over kernel
families on recorded spaces (benchmarks/cv_search.py, docs/benchmarks.md).
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from ..types import Measurement
from .base import Strategy
from .density import DensityModel
from .gp import Model
from .guard import StallGuard
from .observed import Observations
from .ranges import ARMS, TRANSFER, check  # noqa: F401 (ARMS and TRANSFER are named here too)
from .space import SearchSpace
from .swarm import SwarmStrategy

#: TRANSFER, how far transfer seeds steer the search: "first" (every seed before anything else), "arm" (the
#: best seed steers every technique), "soft" (only the density model sees seeds), "probe" (seeds
#: are measured and count as results, but no technique is told about them), "near" (probes, then
#: the configs nearest the best seed, ``seed_picks`` in all at most, none told to the techniques)
HIDDEN = ("probe", "near")  # the transfer modes whose picks no technique learns from


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
    bandwidth: float
    lead: int
    short_budget: int
    transfer: str
    seed_picks: int
    prior: dict[str, float]
    gamma: float
    polish: float
    failure_credit: str
    ring: str


#: the settings used unless told otherwise: chosen by cross-validation (docs/benchmarks.md, issue 12)
DEFAULTS = Defaults(start=8, discount=0.95, top=0.1, spread=1, arms=("density", "local", "swarm", "hop"),
                    patience=50, patience_fraction=0.5, burst=5, start_fraction=0.05, patience_budget=0.0,
                    design="far", far_pool=0, respread="random", bandwidth=1.0, lead=0,
                    short_budget=50, transfer="near", seed_picks=8, prior={"density": 2}, gamma=0.15,
                    polish=0.0, failure_credit="loss", ring="changed")
DEFAULT_ARMS = DEFAULTS["arms"]


class _Ring:
    """Unseen configs nearest to a centre, ring by ring; the distances are cached per centre."""

    def __init__(self, space: SearchSpace, tiebreak: np.ndarray, metric: str = "steps"):
        self.space, self.tiebreak, self.metric = space, tiebreak, metric
        self.center: int | None = None
        self.steps: np.ndarray | None = None

    def nearest(self, center: int, unseen: np.ndarray) -> int:
        if center != self.center:  # the distances change only when the centre does
            diff = np.abs(self.space.codes - self.space.codes[center])  # value steps per parameter
            if self.metric == "few":  # a parameter of at most 4 values: any other value is one step away
                few = np.array([len(d.values) <= 4 for d in self.space.dims])
                diff = np.where(few, diff > 0, diff)
            steps = diff.sum(axis=1).astype(np.float64)  # the one-value-step distance of local.steps_from
            if self.metric == "changed":  # every config one parameter away (any value of it) before any two away
                steps = steps + (diff > 0).sum(axis=1) * float(self.space.codes.max() + 1) * len(self.space.dims)
            self.center, self.steps = center, steps + self.tiebreak
        assert self.steps is not None  # set with the centre
        return int(np.argmin(np.where(unseen, self.steps, np.inf)))


class EnsembleStrategy(Strategy):
    name = "ensemble"
    seeds_first = False  # seeds are the transfer arm's, weighed like any technique

    def __init__(self, space: SearchSpace, seed: int | None = None, start: int = DEFAULTS["start"],
                 discount: float = DEFAULTS["discount"], top: float = DEFAULTS["top"], spread: int = DEFAULTS["spread"],
                 arms: tuple[str, ...] = DEFAULT_ARMS, patience: int = DEFAULTS["patience"],
                 patience_fraction: float = DEFAULTS["patience_fraction"], burst: int = DEFAULTS["burst"],
                 scatter: str = "forget", reset_bandit: bool = True, prior: dict | None = DEFAULTS["prior"],
                 transfer: str = DEFAULTS["transfer"], lengthscale: float = 0.5, fit: bool = False,
                 lead: int = DEFAULTS["lead"],
                 clip: float = 1.0, start_fraction: float = DEFAULTS["start_fraction"],
                 patience_budget: float = DEFAULTS["patience_budget"], design: str = DEFAULTS["design"],
                 far_pool: int = DEFAULTS["far_pool"], respread: str = DEFAULTS["respread"],
                 bandwidth: float = DEFAULTS["bandwidth"], short_budget: int = DEFAULTS["short_budget"],
                 seed_picks: int = DEFAULTS["seed_picks"], gamma: float = DEFAULTS["gamma"],
                 polish: float = DEFAULTS["polish"], failure_credit: str = DEFAULTS["failure_credit"], ring: str = DEFAULTS["ring"], **options):
        check("ensemble", start=start, discount=discount, top=top, spread=spread, arms=arms, patience=patience,
              patience_fraction=patience_fraction, burst=burst, scatter=scatter, prior=prior or {}, transfer=transfer,
              lengthscale=lengthscale, lead=lead, clip=clip, start_fraction=start_fraction,
              patience_budget=patience_budget, design=design, far_pool=far_pool, respread=respread,
              bandwidth=bandwidth, short_budget=short_budget, seed_picks=seed_picks, gamma=gamma, polish=polish,
              failure_credit=failure_credit, ring=ring)
        super().__init__(space, seed)
        self.seeds_first = transfer == "first"  # "first": every seed before anything else (the old way)
        self.arms = tuple(arms) + ("transfer",)  # the last is active only while seeds are left
        # the swarm arm is a whole swarm strategy sharing this one's record of seen configs
        self.swarm = SwarmStrategy(space, seed) if "swarm" in arms else None
        if self.swarm is not None:
            self.swarm.unseen = self.unseen
        self.obs = Observations(space)
        self.model = DensityModel(space, gamma=gamma, bandwidth=bandwidth)
        self.gp = Model(space, self.rng, lengthscale, fit, clip) if "gp" in arms else None
        self.start, self.discount, self.top, self.spread, self.burst = start, discount, top, spread, burst
        self.lead = lead  # after the opening, this many picks by the first arm alone (the model)
        self.short_budget = short_budget
        self.polish = polish  # the last this fraction of a known budget: beside the best so far
        # 'none': a failed proposal is neither a win nor a loss for the arm that made it (it cost no budget)
        self.failure_credit = failure_credit
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
        self._local_ring, self._hop_ring = _Ring(space, self.tiebreak, ring), _Ring(space, self.tiebreak, ring)
        self._burst_left = 0
        self._hop_best: tuple[float, int] | None = None  # (time, index) of the best since the last restart
        self._own_best: tuple[float, int] | None = None  # (time, index) of the best the techniques steer by
        self._init_transfer(transfer, seed_picks)
        #: the technique behind each proposal, in order ("restart" for the stall guard's random picks)
        self.techniques: list[str] = []
        self._feasible = 0  # configs that ran: what a budget counts (a failure costs none)

    def _init_transfer(self, transfer: str, seed_picks: int) -> None:
        """The transfer arm's state: how seeds steer, which were measured, whether they still pay."""
        self.transfer = transfer
        self.seed_picks = seed_picks
        self._first_seed_done = False
        self._seeds_pay = True  # until a seed fails to rank among the best measured
        self._first_seed: int | None = None
        self._seed_log: dict[int, float] = {}  # seed index -> log time (inf: failed), every seed measured
        self._seeds_in_obs = 0  # seeds in the shared record that do not count towards the opening
        self._judged = False
        self._transfer_picks = 0
        self._seed_ring = _Ring(self.space, self.tiebreak)

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
        if self._opened() < self.opening() or self._own_best is None:
            if self.design == "far" and self._opened():
                return "far"
            return "swarm" if self.swarm is not None else "random"
        if self._polishing():
            return "local"
        if self._opened() < self.opening() + self.leading() and not self.guard.restarts:
            return self.arms[0]
        active = np.array([a != "hop" or self._hop_best is not None for a in self.arms])
        active[-1] = self._seeds_pay and (any(self.unseen[i] for i in self.preferred) or self._near_left())
        draw = np.where(active, self.rng.beta(self.wins + 1.0, self.losses + 1.0), -1.0)
        return self.arms[int(np.argmax(draw))]

    def _polishing(self) -> bool:
        """Whether this pick is among the last ``polish`` fraction of a known budget, which go to the
        configs nearest the best so far: a run that ends with untried one-step siblings of its best
        leaves speed behind (a sibling 1.2-1.7x faster was seen on gemv_q after 20 trials)."""
        if not self.polish or self.budget is None:
            return False
        return self._feasible >= self.budget - math.floor(self.polish * self.budget)

    def opening(self) -> int:
        """Random picks before any technique is weighed: ``start``, or, with a known budget and
        ``start_fraction``, that fraction of it within [2, start]: on a space where random search
        needs a handful of picks, eight blind ones would spend most of the budget (issue 12)."""
        if self.budget is None or not self.start_fraction:
            return self.start
        return int(min(self.start, max(2, math.ceil(self.start_fraction * self.budget))))

    def leading(self) -> int:
        """Picks after the opening made by the first arm (the model) alone: ``lead``, or the whole
        budget where it is known and at most ``short_budget``. A bandit over four arms needs a few
        picks of each before its choice means anything; on a budget of a dozen or thirty that
        learning is most of the budget, spent on arms picked at random, and the model alone does
        better (issue 12: dedispersion's budgets of 11 to 31)."""
        if self.budget is not None and self.budget <= self.short_budget:
            return self.budget
        return self.lead

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
        self._transfer_picks += 1
        if i is None and self._near_left():  # the seeds are spent: beside the best of them
            return self._seed_ring.nearest(min(self._seed_log, key=self._seed_log.__getitem__), self.unseen)
        return self._random() if i is None else i

    def _near_left(self) -> bool:
        return self.transfer == "near" and bool(self._seed_log) and self._transfer_picks < self.seed_picks

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
        assert self._own_best is not None  # the bandit's arms pick only once something ran
        return self._local_ring.nearest(self._own_best[1], self.unseen)

    def _hop(self) -> int:
        assert self._hop_best is not None  # the arm is active only with a best since the restart
        return self._hop_ring.nearest(self._hop_best[1], self.unseen)

    # ---- learning -----------------------------------------------------------------------
    def observe(self, index: int, m: Measurement) -> None:
        arm = self._asked.pop(index, None)
        self._feasible += bool(m.ok)
        seed = arm == len(self.arms) - 1  # measured by the transfer arm
        value = math.log(max(m.time, 1e-30)) if m.ok else math.inf
        y = self.obs.values() if self._opened() >= self.opening() else None
        if seed:
            self._seed_log[index] = value
        if not (seed and self.transfer in HIDDEN):  # a probe is a result, not something to learn from
            self._learn(index, m, seed)
        credit = m.ok or seed or self.failure_credit == "loss"  # a seed that fails still ends the transfer
        if arm is not None and y is not None and len(y) and credit:  # told from outside (an earlier run): no technique to credit
            k = int(self.top * (len(y) - 1))
            won = value <= np.partition(y, k)[k]
            self.wins *= self.discount
            self.losses *= self.discount
            self.wins[arm] += won
            self.losses[arm] += not won
            if seed and not won:
                self._seeds_pay = False  # one seed that does not pay ends the transfer: bad seeds cost a few picks
        if self._first_seed is not None and not self._judged and self._opened() >= self.opening():
            self._judge_first_seed()
        if self.guard.stalled:
            self._respread()

    def _learn(self, index: int, m: Measurement, seed: bool) -> None:
        """Tell the techniques about one outcome. With ``transfer`` "soft", a seed reaches only the
        shared record (the density model, the bandit's ranking), never the swarm, the guard or the
        local search's centre: a good seed in the wrong basin must not draw the search into it."""
        self.obs.add(index, m)
        steer = not seed or self.transfer in ("arm", "first")
        if seed and not steer:
            self._seeds_in_obs += 1
        if self.swarm is not None and steer:
            self.swarm.observe(index, m)
        if self.gp is not None:
            self.gp.tell(index, m)
        if steer:
            self.guard.observe(m.ok, m.time)
            if m.ok and (self._own_best is None or m.time < self._own_best[0]):
                self._own_best = (m.time, index)
            if m.ok and self.guard.restarts and (self._hop_best is None or m.time < self._hop_best[0]):
                self._hop_best = (m.time, index)

    def _opened(self) -> int:
        """Outcomes that count towards the opening: with seeds kept from steering, the search's own."""
        return len(self.obs) - self._seeds_in_obs

    def _judge_first_seed(self) -> None:
        """The first seed is measured before there is anything to compare it with: once the opening
        is done, it must rank among the ``top`` fraction of what was measured, or the other seeds
        are not taken."""
        self._judged = True
        first = math.inf if self._first_seed is None else self._seed_log.get(self._first_seed, math.inf)
        y = self.obs.values()
        if self.transfer in HIDDEN:  # the seed is not in the record: rank it among it
            y = np.append(y, first)
        k = int(self.top * (len(y) - 1))
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
