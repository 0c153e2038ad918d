"""The ask/tell loop: a strategy proposes, a runner measures, the strategy is told.

Live tuning and replay both run it; they differ only in when to stop and in what
they do with each measurement.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Sequence

from ..types import Config, Measurement
from . import Runner
from .evaluator import interval


def drive(strategy, runner: Runner, should_stop: Callable[[], str | None], on_measured: Callable[[Measurement], None],
          first: Iterable[Config] = (), lookahead: int = 0,
          prefetch: Callable[[Sequence[Config]], object] | None = None,
          best: Callable[[], float | None] | None = None) -> str:
    """Measure configs until ``should_stop`` gives a reason or the strategy has none left;
    return the reason ("space exhausted" for the latter).

    ``first`` are measured before the strategy's proposals (the template's default).
    With ``lookahead`` the loop asks that many configs ahead and hands them to ``prefetch``
    (builders compile them while the current one is timed). ``best`` gives the best time so
    far, passed to the runner with each config so it can abandon hopeless ones; without it
    the runner is called as ``evaluate(config)`` (a recorded space's runner takes nothing more).
    """
    queue = list(first)
    while True:
        reason = should_stop()
        if reason:
            return reason
        while len(queue) < 1 + lookahead and (c := strategy.ask()) is not None:
            queue.append(c)
        if not queue:
            return "space exhausted"
        config = queue.pop(0)
        if prefetch is not None:
            prefetch(queue)
        m = runner.evaluate(config) if best is None else runner.evaluate(config, best=best())
        strategy.tell(config, m)
        on_measured(m)


def _interval(m: Measurement) -> tuple[float, float]:
    assert m.timing is not None, "an ok measurement is timed"
    return interval(m.timing)


def confirm_leaders(runner: Runner, candidates: Iterable[Measurement], method) -> list[Measurement]:
    """Re-measure the leaders interleaved when their intervals (widened by ``method.drift``)
    overlap the best's; [] if they don't."""
    leaders = sorted((m for m in candidates if m.ok), key=lambda m: m.time)[: max(method.confirm, 0)]
    if len(leaders) < 2:
        return []
    best_hi = _interval(leaders[0])[1] * (1 + method.drift)
    close = [leaders[0]] + [m for m in leaders[1:] if _interval(m)[0] <= best_hi]
    if len(close) < 2:
        return []
    fresh = runner.compare([m.config for m in close])
    # Keep what the first measurement knew that a re-measurement does not: the compile time.
    return [replace(f, compile_seconds=old.compile_seconds) for f, old in zip(fresh, close)]
