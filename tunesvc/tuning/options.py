"""What a tuning run may be told, as three typed option objects, each checked at the edge.

* :class:`StopRules`: when to stop (trials, a time budget, patience);
* :class:`SearchOptions`: which strategy, its seed, and where its state lives;
* :class:`RunOptions`: how candidates are run (timing method, isolation, timeout, builders).

:func:`from_keywords` routes ``tune()``'s keyword shortcuts (``trials=10, seed=1, ...``) to them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

from .. import search
from ..errors import UsageError
from ..measure.evaluator import Method
from ..types import DeviceInfo

#: trials when no stopping rule is given at all
DEFAULT_TRIALS = 50
#: build processes beyond this would only fight over the cores and the driver's cache
MAX_BUILD_WORKERS = 64
MAX_SECONDS = 1e7  # ~4 months: a longer budget or timeout is a typo


def _seconds(value: float | None, flag: str) -> None:
    """A positive, finite number of seconds, or None."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{flag} must be a number of seconds; got {value!r}")
    if not math.isfinite(value) or value > MAX_SECONDS:
        raise UsageError(f"{flag} must be a finite number of seconds, at most {MAX_SECONDS:g}; got {value!r}")
    if value <= 0:
        raise UsageError(f"{flag} must be a positive number of seconds")


def _count(value: int | None, flag: str, low: int, high: int | None = None, unit: str = "") -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{flag} must be a whole number; got {value!r}")
    if value < low:
        raise UsageError(f"{flag} must be at least {low}{unit}" if low else f"{flag} must be 0 or more")
    if high is not None and value > high:
        raise UsageError(f"{flag} must be at most {high}; got {value}")


@dataclass(frozen=True)
class StopRules:
    """When a tuning run stops: whichever rule fires first (or when the space runs out)."""

    trials: int | None = None  # new measurements
    time_budget: float | None = None  # seconds
    patience: int | None = None  # trials in a row without an improvement of min_improvement
    min_improvement: float = 0.01  # relative: 0.01 = the best time must drop by 1%

    def __post_init__(self):
        _count(self.trials, "--trials", 1)
        _seconds(self.time_budget, "--time-budget")
        _count(self.patience, "--patience", 1, unit=" trial")
        if not isinstance(self.min_improvement, (int, float)) or not 0 <= self.min_improvement < 1:
            raise UsageError("--min-improvement must be a fraction in [0, 1), e.g. 0.01 for 1%")

    @property
    def unbounded(self) -> bool:
        return self.trials is None and self.time_budget is None and self.patience is None

    def or_default(self) -> "StopRules":
        """These rules, or DEFAULT_TRIALS trials when none is set."""
        return dataclasses.replace(self, trials=DEFAULT_TRIALS) if self.unbounded else self

    def describe(self) -> str:
        parts = []
        if self.trials is not None:
            parts.append(f"{self.trials} trials")
        if self.time_budget is not None:
            parts.append(f"budget {self.time_budget:g} s")
        if self.patience is not None:
            parts.append(f"patience {self.patience} trials at {self.min_improvement:.1%}")
        return ", ".join(parts) or "whole space"

    def reason(self, measured: int, since_improvement: int, start: float) -> str | None:
        """Why to stop now, or None."""
        if self.trials is not None and measured >= self.trials:
            return f"{self.trials} trials done"
        if self.time_budget is not None and time.perf_counter() - start >= self.time_budget:
            return f"time budget of {self.time_budget:g} s spent"
        if self.patience is not None and since_improvement >= self.patience:
            return f"no improvement of {self.min_improvement:.1%} in {self.patience} trials"
        return None


@dataclass(frozen=True)
class SearchOptions:
    """Which strategy searches, from which seed, and where its state lives (an Optuna storage URL;
    default: an SQLite file beside the database) under which study name (default: per problem)."""

    strategy: str | None = None  # None: the default
    seed: int | None = None
    storage: str | None = None
    study: str | None = None
    #: the strategy's own settings (``--strategy-option KEY=VALUE``), checked against those it takes
    strategy_options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.strategy is not None:
            search.check_name(self.strategy)
        if self.strategy_options:
            object.__setattr__(self, "strategy_options", search.parse_options(self.strategy_name, self.strategy_options))
        _count(self.seed, "--seed", 0, 2**32 - 1)

    @property
    def strategy_name(self) -> str:
        """The strategy to run (every strategy searches through an Optuna study, shared or not)."""
        return self.strategy or search.DEFAULT_STRATEGY


@dataclass(frozen=True)
class RunOptions:
    """How candidates run: the timing ``method``; in a worker process (``isolate``) killed after
    ``timeout`` seconds per phase; with ``build_workers`` compiling upcoming configs meanwhile."""

    method: Method = Method()
    timeout: float | None = 60.0
    isolate: bool = True
    build_workers: int | None = None

    def __post_init__(self):
        _seconds(self.timeout, "--timeout")
        _count(self.build_workers, "--build-workers", 0, MAX_BUILD_WORKERS)
        if not self.isolate and self.timeout is not None and self.timeout != RunOptions.timeout:
            raise UsageError("--timeout needs isolation (a hung kernel can only be stopped by killing its worker "
                             "process): drop --no-isolation or --timeout")

    def builders(self, info: DeviceInfo) -> int:
        """Default: one builder beside a GPU; none beside a CPU device, whose cores the compiler
        would take from the kernel being timed (and so make its timing noisier)."""
        if not self.isolate:
            return 0
        if self.build_workers is not None:
            return self.build_workers
        return 0 if info.device_type == "cpu" else 1


_STOP = {f.name for f in dataclasses.fields(StopRules)}
_SEARCH = {f.name for f in dataclasses.fields(SearchOptions)}
_RUN = {f.name for f in dataclasses.fields(RunOptions)}


def from_keywords(stop: StopRules | None = None, search_options: SearchOptions | None = None,
                  run: RunOptions | None = None, **keywords: Any) -> tuple[StopRules, SearchOptions, RunOptions]:
    """The three option objects, with each keyword shortcut (``trials``, ``strategy``, ``timeout``,
    ...) set on the one that has it; a keyword none has is a UsageError naming the known ones."""
    unknown = set(keywords) - _STOP - _SEARCH - _RUN
    if unknown:
        raise UsageError(f"unknown tune option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_STOP | _SEARCH | _RUN))}")

    def mine(names: set) -> dict:
        return {k: v for k, v in keywords.items() if k in names}

    return (dataclasses.replace(stop or StopRules(), **mine(_STOP)),
            dataclasses.replace(search_options or SearchOptions(), **mine(_SEARCH)),
            dataclasses.replace(run or RunOptions(), **mine(_RUN)))
