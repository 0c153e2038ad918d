"""Progress of a long command: a bar on a terminal; elsewhere (a CI log, a pipe) one line at a
fixed interval, with the count, the best so far and an estimate of the time left."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from ..settings import progress_interval


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds < 3600 else f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """``update(done, text)`` after each step; ``total`` steps of ``unit`` (None: unknown), or a
    ``budget`` of seconds; shown only when ``enabled`` (not with --json or -q)."""

    def __init__(self, label: str, total: int | None, unit: str, enabled: bool = True,
                 budget: float | None = None, stream=None, interval: float | None = None):
        self.label, self.total, self.unit, self.budget = label, total, unit, budget
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.interval = progress_interval() if interval is None else interval
        self.start = self.last = time.monotonic()
        self.done, self.text = 0, ""
        self.bar: Any = None

    def __enter__(self) -> "Progress":
        if self.tty:
            self.bar = click.progressbar(length=self.total or 0, label=self.label, file=self.stream, show_eta=False,
                                         show_pos=True, item_show_func=lambda s: s)
            self.bar.__enter__()
        elif self.enabled:
            self._line("started")
        return self

    def update(self, done: int, text: str = "", total: int | None = None) -> None:
        if total is not None:
            self.total = total
            if self.bar is not None:
                self.bar.length = total
        step, self.done, self.text = done - self.done, done, text
        if self.bar is not None:
            if self.total:
                self.bar.update(step, text)
            else:
                click.echo(f"  {self.unit} {done}: {text}", err=True)
        elif self.enabled and time.monotonic() - self.last >= self.interval:
            self._line(text)

    def left(self) -> str:
        """An estimate of the time left: by the rate so far, or by the budget."""
        elapsed = time.monotonic() - self.start
        if self.total and self.done:
            return _duration(elapsed / self.done * (self.total - self.done))
        if self.budget:
            return _duration(self.budget - elapsed)
        return "unknown"

    def _line(self, text: str) -> None:
        self.last = time.monotonic()
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        click.echo(f"{self.label}: {count} {self.unit}{'; ' + text if text else ''}; "
                   f"{_duration(self.last - self.start)} elapsed, about {self.left()} left", file=self.stream)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif self.enabled and exc[0] is None:
            self._line(self.text + "; done" if self.text else "done")
