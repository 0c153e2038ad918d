"""tune(): one tuning problem from start to stored result.

Device + template -> space of valid configs -> strategy asks, evaluator
measures -> every measurement stored. Configs measured before for the same
problem are reused, not run again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from . import search, templates
from .cache import Store
from .devices import open_device, select_device
from .errors import InvalidShapeError, UsageError
from .evaluate import Evaluator, Method
from .templates.base import Context
from .types import DeviceInfo, Measurement, Record, shape_str


@dataclass(frozen=True)
class TrialEvent:
    """Reported after each config: for progress displays."""

    index: int  # 1-based count of new measurements
    measurement: Measurement
    best: Measurement | None
    elapsed: float


@dataclass(frozen=True)
class TuneResult:
    template: str
    shape: tuple[int, ...]
    dtype: str
    device: DeviceInfo
    strategy: str
    space_size: int
    default: Measurement | None
    best: Measurement | None
    measured: tuple[Measurement, ...]  # new measurements of this run, in order
    reused: int  # measurements found in the database and not run again
    elapsed: float
    stop_reason: str
    db_path: str = ""
    failures: dict = field(default_factory=dict)  # status -> count among new measurements

    @property
    def speedup(self) -> float | None:
        if self.best and self.default and self.default.ok and self.best.ok:
            return self.default.time / self.best.time
        return None


def check_fits(template, shape, dtype: str, info: DeviceInfo) -> None:
    """Refuse a problem whose buffers cannot exist on the device."""
    plan = template.plan(template.default_config(), shape, dtype)
    total = sum(b.nbytes for b in plan.buffers)
    biggest = max(b.nbytes for b in plan.buffers)
    if biggest > info.max_alloc_size or total > info.global_mem_size:
        raise InvalidShapeError(
            f"shape {shape_str(shape)} needs {total / 2**20:.0f} MiB ({biggest / 2**20:.0f} MiB in one buffer); "
            f"{info.name} allows {info.max_alloc_size / 2**20:.0f} MiB per buffer and {info.global_mem_size / 2**20:.0f} MiB in all: use a smaller shape"
        )


def prepare(template, shape, dtype: str, device):
    """Validate everything a user gave; return (template, shape, dtype, DeviceInfo)."""
    tpl = templates.get(template)
    shape = tpl.parse_shape(shape)
    tpl.check_dtype(dtype)
    info = select_device(device)
    tpl.check_dtype(dtype, info)
    check_fits(tpl, shape, dtype, info)
    return tpl, shape, dtype, info


def tune(
    template,
    shape,
    dtype: str = "float32",
    device=None,
    db=None,
    strategy: str = search.DEFAULT_STRATEGY,
    trials: int | None = None,
    time_budget: float | None = None,
    seed: int | None = None,
    method: Method = Method(),
    on_trial: Callable[[TrialEvent], None] | None = None,
) -> TuneResult:
    """Tune ``template`` for ``shape`` on ``device``; store and return what was measured.

    Stops after ``trials`` new measurements, after ``time_budget`` seconds, or
    when every valid config has been measured, whichever comes first. With
    neither limit, 50 trials.
    """
    if trials is not None and trials < 1:
        raise UsageError("--trials must be at least 1")
    if time_budget is not None and time_budget <= 0:
        raise UsageError("--time-budget must be a positive number of seconds")
    if trials is None and time_budget is None:
        trials = 50
    tpl, shape, dtype, info = prepare(template, shape, dtype, device)
    store = Store(db)
    store.put_device(info)
    space = search.SearchSpace.from_template(tpl, Context(shape, dtype, info))
    strat = search.make(strategy, space, seed)
    known = store.measurements(info.fingerprint.key, tpl.name, tpl.source_hash, dtype, shape)
    for config, m in known.items():
        strat.tell(config, m)
    evaluator = Evaluator(open_device(info), tpl, shape, dtype, method, seed=seed or 0)

    start = time.perf_counter()
    measured: list[Measurement] = []
    best = min((m for m in known.values() if m.ok), key=lambda m: m.time, default=None)
    stop = "space exhausted"
    pending = [space.default] if space.default is not None and space.default not in known else []
    while True:
        if trials is not None and len(measured) >= trials:
            stop = f"{trials} trials done"
            break
        if time_budget is not None and time.perf_counter() - start >= time_budget:
            stop = f"time budget of {time_budget:g} s spent"
            break
        config = pending.pop() if pending else strat.ask()
        if config is None:
            break
        m = evaluator.evaluate(config)
        strat.tell(config, m)
        store.put(Record(info.fingerprint, tpl.name, tpl.source_hash, dtype, shape, m))
        measured.append(m)
        if m.ok and (best is None or m.time < best.time):
            best = m
        if on_trial:
            on_trial(TrialEvent(len(measured), m, best, time.perf_counter() - start))

    default_cfg = tpl.default_config()
    default = next((m for m in measured if m.config == default_cfg), known.get(default_cfg))
    failures: dict[str, int] = {}
    for m in measured:
        if not m.ok:
            failures[m.status] = failures.get(m.status, 0) + 1
    return TuneResult(tpl.name, shape, dtype, info, strategy, len(space), default, best, tuple(measured),
                      len(known), time.perf_counter() - start, stop, str(store.path), failures)
