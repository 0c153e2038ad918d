"""The stall guard: notice a search that has stopped improving, before its budget is gone.

A search that settles in one basin keeps proposing configs beside its best and
finds nothing better; on some recorded spaces the default used to spend the
whole budget of 1,000 evaluations that way, scoring below random search
(issue 12). The guard counts feasible evaluations since the best time last
improved by at least ``min_gain`` (a fraction). Once that count reaches the
patience, the search is stalled: its owner re-spreads (random restarts, the
swarm scattered afresh, local search moved to another basin) and the guard
starts counting again.

The patience grows with the evaluations spent (``fraction`` of them, at least
``patience``): early on a short stall is cheap to act on; late, the search has
earned a longer look at its basin before it is moved off it. Without knowing
the budget (live tuning may stop on time), this is the only scale available.
"""

from __future__ import annotations

import math


class StallGuard:
    """Counts feasible evaluations since the last real improvement; says when to re-spread."""

    def __init__(self, patience: int = 30, fraction: float = 0.25, min_gain: float = 0.005):
        self.patience = patience
        self.patience_floor = min(patience, 10)  # the least a budget may shrink it to (StallGuard users: ensemble.expect)
        self.fraction = fraction
        self.min_gain = min_gain
        self.best = math.inf
        self.feasible = 0  # ok outcomes seen
        self.since = 0  # ok outcomes since the best last improved by min_gain, or since a restart
        self.restarts = 0

    def limit(self) -> float:
        """Evaluations without improvement that count as a stall now."""
        if self.patience <= 0:
            return math.inf  # guard off
        return max(self.patience, self.fraction * self.feasible)

    def observe(self, ok: bool, time: float) -> bool:
        """Count one outcome; True when it improved the best by at least ``min_gain``.
        Failures do not count: they cost no budget, and a space can have runs of them."""
        if not ok:
            return False
        self.feasible += 1
        self.since += 1
        if time < self.best * (1.0 - self.min_gain):
            self.best = time
            self.since = 0
            return True
        self.best = min(self.best, time)
        return False

    @property
    def stalled(self) -> bool:
        return self.since >= self.limit()

    def restarted(self) -> None:
        """The owner re-spread: give the new start a full patience before the next stall."""
        self.restarts += 1
        self.since = 0
