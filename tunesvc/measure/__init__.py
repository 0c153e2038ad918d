"""Measuring: where candidates are built, verified and timed, and the loop that feeds them.

One protocol, :class:`Runner`, with three implementations:

* :class:`~tunesvc.measure.evaluator.Evaluator`: in this process (``--no-isolation``);
* :class:`~tunesvc.measure.worker.Worker`: in a child process that a hang or a crash
  cannot take down (the default);
* :class:`~tunesvc.replay.runner.RecordedRunner`: answers from a recorded tuning space.

:func:`~tunesvc.measure.drive.drive` is the one ask/tell loop that live tuning and replay share.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ..types import Config, Measurement


class Runner(Protocol):
    """Turns configs into measurements; failures are measurements with a reason, never exceptions."""

    #: workers lost to crashes and timeouts, and replaced (0 for runners that cannot lose one)
    replaced: int

    def evaluate(self, config: Config, best: float | None = None) -> Measurement:
        """Build, verify and time one config (or answer as recorded). ``best``, the best time so far,
        is optional: a runner that times may stop timing a config clearly slower than it (an
        ``ok`` measurement marked abandoned, see :func:`tunesvc.measure.evaluator.abandoned`);
        a caller that has no best passes nothing, and a runner that cannot use it ignores it."""

    def compare(self, configs: Sequence[Config]) -> list[Measurement]:
        """Re-measure configs that ran before, interleaved, so a slow spell hits them alike."""

    def close(self) -> None:
        """Release processes and driver resources."""
