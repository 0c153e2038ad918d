"""What a model-based strategy knows: the measured configs and their log times, failures included.

Failures are information: a failed config is scored as slower than every
working one (the worst log time plus log 2), so models learn to steer away
from the region around it instead of forgetting it.
"""

from __future__ import annotations

import math

import numpy as np

from ..types import Measurement
from .space import SearchSpace

FAILURE_PENALTY = math.log(2.0)


class Observations:
    def __init__(self, space: SearchSpace):
        self.space = space
        self.index: list[int] = []  # measured config indices, in order
        self.log_time: list[float] = []  # NaN for a failure
        self.best_index: int | None = None
        self.best = math.inf

    def __len__(self) -> int:
        return len(self.index)

    def add(self, index: int, m: Measurement) -> bool:
        """Record one outcome; True when it is a new best."""
        value = math.log(max(m.time, 1e-30)) if m.ok else math.nan
        self.index.append(index)
        self.log_time.append(value)
        if m.ok and value < self.best:
            self.best, self.best_index = value, index
            return True
        return False

    def values(self) -> np.ndarray:
        """Log times with failures replaced by the worst working one plus a penalty."""
        y = np.array(self.log_time, dtype=np.float64)
        ok = ~np.isnan(y)
        worst = y[ok].max() if ok.any() else 0.0
        y[~ok] = worst + FAILURE_PENALTY
        return y

    def ranked(self) -> np.ndarray:
        """Measured config indices, fastest first, failures last."""
        order = np.argsort(self.values(), kind="stable")
        return np.asarray(self.index, dtype=np.int64)[order]
