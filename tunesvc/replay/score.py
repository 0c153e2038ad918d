"""Run search strategies on recorded tuning spaces and score them.

Each run drives one strategy through the same ask/tell loop as live tuning
(:func:`tunesvc.measure.drive.drive`), against a :class:`~tunesvc.replay.runner.RecordedRunner`, until it has made
``budget`` feasible evaluations. The figures follow Willemsen et al. 2024
("A methodology for comparing optimization algorithms for auto-tuning",
FGCS): the score compares the strategy's mean best-so-far with the exact
expectation of random sampling without replacement, evaluation by evaluation.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import search
from .runner import RecordedRunner
from ..errors import UsageError
from ..measure.drive import drive
from ..types import Config

#: "near-optimal" means within this factor of the optimum
TOLERANCE = 1.05
MAX_DEFAULT_BUDGET = 1000


@dataclass(frozen=True)
class ReplayRun:
    """One strategy run: the recorded times of the feasible configs, in evaluation order."""

    times: tuple[float, ...]
    evaluations: int  # every evaluation, failed ones included
    simulated_seconds: float  # recorded compile + benchmark time of every evaluation


@dataclass(frozen=True)
class ReplayReport:
    """Figures of one strategy on one recorded file (fields as ``tunesvc replay --json`` prints)."""

    file: str
    strategy: str
    budget: int
    n_valid: int
    optimum: float
    expected_random_evals_to_5pct: float
    median_evals_to_5pct: float
    fraction_reached: float
    best_over_optimum: float
    score: float
    runs: tuple[ReplayRun, ...]

    def to_dict(self) -> dict:
        return {
            "file": self.file, "strategy": self.strategy, "n_valid": self.n_valid,
            "optimum": self.optimum, "expected_random_evals_to_5pct": self.expected_random_evals_to_5pct,
            "median_evals_to_5pct": self.median_evals_to_5pct, "fraction_reached": self.fraction_reached,
            "best_over_optimum": self.best_over_optimum, "score": self.score,
            "runs": [list(r.times) for r in self.runs],
        }


# ---- figures ------------------------------------------------------------------------------
def expected_random_evals(times: np.ndarray, tolerance: float = TOLERANCE) -> float:
    """Expected draws without replacement until the first time within ``tolerance`` of the
    optimum: with k such configs among n, (n + 1) / (k + 1)."""
    n = len(times)
    k = int(np.count_nonzero(times <= times.min() * tolerance))
    return (n + 1) / (k + 1)


def default_budget(times: np.ndarray) -> int:
    """4x the expected random draws to reach 5% of the optimum, at most 1000 and the space size."""
    return int(min(len(times), MAX_DEFAULT_BUDGET, math.ceil(4 * expected_random_evals(times))))


def expected_random_best(times: np.ndarray, budget: int) -> np.ndarray:
    """E[best of M draws without replacement] for M = 1..budget, exactly.

    With the times sorted, the best of M draws is at rank k or worse with
    probability S_k = C(n-k, M) / C(n, M) = prod_{j<k} (n-M-j) / (n-j); so
    E = t_0 + sum_{k>=1} (t_k - t_{k-1}) S_k.
    """
    t = np.sort(np.asarray(times, dtype=np.float64))
    n = len(t)
    steps = np.diff(t)
    j = np.arange(n - 1, dtype=np.float64)
    out = np.empty(budget)
    for m in range(1, budget + 1):
        survival = np.cumprod(np.clip((n - m - j) / (n - j), 0.0, None))  # S_1 .. S_{n-1}
        out[m - 1] = t[0] + float(steps @ survival)
    return out


def best_so_far(run: Sequence[float], budget: int) -> np.ndarray:
    """Best time after each of the first ``budget`` evaluations; a run that ended early
    (space exhausted) keeps its last best."""
    best = np.minimum.accumulate(np.asarray(run, dtype=np.float64))
    return np.concatenate([best, np.full(budget - len(best), best[-1])])[:budget]


def performance_score(runs: Sequence[Sequence[float]], times: np.ndarray, budget: int) -> float:
    """Willemsen et al.'s P = mean over M of (f_random(M) - f_strategy(M)) / (f_random(M) - f_opt).

    1 means the optimum from the first evaluation on; 0 means no better than random
    sampling; evaluations where random sampling is already sure of the optimum are left out.
    """
    f_random = expected_random_best(times, budget)
    f_strategy = np.mean([best_so_far(r, budget) for r in runs], axis=0)
    gap = f_random - float(np.min(times))
    keep = gap > 1e-12 * abs(float(np.min(times)))
    if not keep.any():
        return 1.0
    return float(np.mean((f_random[keep] - f_strategy[keep]) / gap[keep]))


def evals_to_reach(run: Sequence[float], target: float, budget: int) -> int:
    """1-based evaluation count at which a time <= target first appears; ``budget`` if never."""
    hits = np.flatnonzero(np.asarray(run) <= target)
    return int(hits[0]) + 1 if hits.size else budget


# ---- running ------------------------------------------------------------------------------
def run_once(runner: RecordedRunner, strategy: str, budget: int, seed: int | None = None, seeds: Sequence[Config] = (),
             options: dict | None = None) -> ReplayRun:
    """One run through the same loop as live tuning, until ``budget`` feasible evaluations or the
    space is exhausted. ``options`` are the strategy's settings (e.g. the ensemble's ``patience``)."""
    runner.reset()
    strat = search.make(strategy, runner.space, seed, **(options or {}))
    strat.prefer(seeds)
    strat.expect(budget)
    times: list[float] = []

    def measured(m) -> None:
        if m.ok:
            times.append(m.time)

    drive(strat, runner, lambda: "budget spent" if len(times) >= budget else None, measured)
    return ReplayRun(tuple(times), runner.evaluations, runner.clock)


def replay(file, strategy: str = search.DEFAULT_STRATEGY, budget: int | None = None, repeats: int = 10,
           seed: int = 0, seeds: Sequence[Config] = (), options: dict | None = None) -> ReplayReport:
    """Run ``strategy`` ``repeats`` times on one recorded file and compute its figures.

    ``file`` is a path or a :class:`RecordedRunner`; ``seeds`` are configs to try first
    (see :mod:`tunesvc.search.transfer`).
    """
    if strategy not in search.STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}; use one of {', '.join(search.STRATEGIES)}")
    if budget is not None and budget < 1:
        raise UsageError("--budget must be at least 1")
    if repeats < 1:
        raise UsageError("--repeats must be at least 1")
    runner = file if isinstance(file, RecordedRunner) else RecordedRunner(file)
    times = runner.recorded.times
    if len(times) == 0:
        raise UsageError(f"{runner.recorded.path}: no config ran successfully in this file; nothing to replay")
    budget = min(budget or default_budget(times), len(times))
    runs = tuple(run_once(runner, strategy, budget, seed + r, seeds, options) for r in range(repeats))
    return summarize(runner.recorded.path, strategy, budget, times, runs)


def summarize(path: str, strategy: str, budget: int, times: np.ndarray, runs: Sequence[ReplayRun]) -> ReplayReport:
    optimum = float(times.min())
    target = optimum * TOLERANCE
    reach = [evals_to_reach(r.times, target, budget) for r in runs]
    reached = [any(t <= target for t in r.times) for r in runs]
    return ReplayReport(
        file=Path(path).name, strategy=strategy, budget=budget, n_valid=len(times), optimum=optimum,
        expected_random_evals_to_5pct=expected_random_evals(times),
        median_evals_to_5pct=float(statistics.median(reach)),
        fraction_reached=sum(reached) / len(runs),
        best_over_optimum=float(np.mean([min(r.times) / optimum for r in runs])),
        score=performance_score([r.times for r in runs], times, budget),
        runs=tuple(runs),
    )
