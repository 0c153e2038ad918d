"""tune(): one tuning problem from start to stored result.

Device + template -> space of valid configs -> strategy asks, a worker
process measures -> every measurement stored. Configs measured before for the
same problem are reused, not run again, and the strategy's own state (an
Optuna study) persists beside the database, so an interrupted run resumes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .. import search, templates
from ..search import transfer
from ..cache import Store
from ..settings import default_db_path
from ..devices import open_device, select_device
from ..errors import InvalidShapeError, MissingDependencyError, UsageError
from ..measure.evaluator import Evaluator, Method, interval
from ..templates.base import Context
from ..types import DeviceInfo, Measurement, Record, shape_str


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
    stop_rules: str = ""  # the rules in force, e.g. "50 trials, patience 10 trials at 1.0%"
    confirmed: tuple[Measurement, ...] = ()  # leaders re-measured interleaved at the end
    isolated: bool = False  # candidates ran in a worker process
    replaced_workers: int = 0  # workers lost to crashes and timeouts, and replaced
    build_workers: int = 0
    storage: str = ""  # Optuna storage of the search state (password hidden)
    study: str = ""

    @property
    def speedup(self) -> float | None:
        if self.best and self.default and self.default.ok and self.best.ok:
            return self.default.time / self.best.time
        return None

    @property
    def ok(self) -> bool:
        """Whether some config ran correctly (this run or a stored one)."""
        return self.best is not None and self.best.ok

    def failure(self) -> str:
        """For a run where no config ran correctly: the dominant failure, an example and the fix."""
        seen = {m.config: m for m in (self.default, *self.measured) if m is not None}  # the default is often measured too
        return describe_failure([m for m in seen.values() if not m.ok])


#: what to do about each kind of failure, when it is every config's
FIXES = {
    "build": "the driver's compiler rejects every config: if it rejects trivial kernels too, 'tunesvc devices --recheck' "
             "marks it unusable; else try another driver ('tunesvc devices' lists them)",
    "launch": "the driver cannot launch these kernels: try another driver ('tunesvc devices' lists them)",
    "runtime": "the driver fails while running these kernels: try another driver ('tunesvc devices' lists them)",
    "wrong_result": "every config computes wrong values on this driver: report it with 'tunesvc show --status wrong_result', "
                    "and try another driver",
    "timeout": "every config ran past --timeout: raise it, or tune a smaller --shape",
    "crash": "the driver crashed on every config: try another driver ('tunesvc devices' lists them)",
    "constraint": "no config of the space is valid for this shape on this device",
}


def describe_failure(failed) -> str:
    if not failed:
        return "no config was measured"
    counts: dict = {}
    for m in failed:
        counts[m.status] = counts.get(m.status, 0) + 1
    status = max(sorted(counts), key=counts.get)
    example = next((m.reason for m in failed if m.status == status and m.reason), "")
    text = f"no config ran correctly: {counts[status]} of {len(failed)} failed with '{status}'"
    if example:
        text += f" (first: {example.splitlines()[0][:200]})"
    return text + "; " + FIXES.get(status, "see 'tunesvc show' for the reasons")


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


@dataclass(frozen=True)
class StopRules:
    """When a tuning run stops: whichever rule fires first (or when the space runs out)."""

    trials: int | None = None  # new measurements
    time_budget: float | None = None  # seconds
    patience: int | None = None  # trials in a row without an improvement of min_improvement
    min_improvement: float = 0.01  # relative: 0.01 = the best time must drop by 1%

    def check(self) -> None:
        if self.trials is not None and self.trials < 1:
            raise UsageError("--trials must be at least 1")
        if self.time_budget is not None and self.time_budget <= 0:
            raise UsageError("--time-budget must be a positive number of seconds")
        if self.patience is not None and self.patience < 1:
            raise UsageError("--patience must be at least 1 trial")
        if not 0 <= self.min_improvement < 1:
            raise UsageError("--min-improvement must be a fraction in [0, 1), e.g. 0.01 for 1%")

    def describe(self) -> str:
        parts = []
        if self.trials is not None:
            parts.append(f"{self.trials} trials")
        if self.time_budget is not None:
            parts.append(f"budget {self.time_budget:g} s")
        if self.patience is not None:
            parts.append(f"patience {self.patience} trials at {self.min_improvement:.1%}")
        return ", ".join(parts) or "whole space"


@dataclass
class _Progress:
    """What the stopping rules look at, updated after every trial."""

    start: float
    best: Measurement | None
    measured: int = 0
    since_improvement: int = 0

    def record(self, m: Measurement, min_improvement: float) -> None:
        self.measured += 1
        self.since_improvement += 1
        if m.ok and (self.best is None or m.time < self.best.time):
            if self.best is None or m.time <= self.best.time * (1 - min_improvement):
                self.since_improvement = 0
            self.best = m


def stop_reason(rules: StopRules, p: _Progress) -> str | None:
    if rules.trials is not None and p.measured >= rules.trials:
        return f"{rules.trials} trials done"
    if rules.time_budget is not None and time.perf_counter() - p.start >= rules.time_budget:
        return f"time budget of {rules.time_budget:g} s spent"
    if rules.patience is not None and p.since_improvement >= rules.patience:
        return f"no improvement of {rules.min_improvement:.1%} in {rules.patience} trials"
    return None


def check_options(trials=None, time_budget=None, patience=None, min_improvement=0.01, timeout=None, build_workers=None) -> StopRules:
    """Validate tune's options (the CLI calls this before it draws anything); return the stop rules."""
    rules = StopRules(trials, time_budget, patience, min_improvement)
    rules.check()
    if timeout is not None and timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if build_workers is not None and build_workers < 0:
        raise UsageError("--build-workers must be 0 or more")
    return rules


def default_storage(db_path) -> str:
    """Optuna's study beside the tuning database: tune.db -> tune.optuna.db. The long SQLite
    timeout lets several tuning processes share the file without 'database is locked'."""
    p = Path(db_path).resolve()
    return f"sqlite:///{p.with_name(p.stem + '.optuna.db')}?timeout=60"


def rdb_url(url: str) -> str:
    """Check an Optuna RDB URL and pick an installed PostgreSQL driver for a bare postgresql://
    (SQLAlchemy 2.1 assumes psycopg 3; tunesvc[postgres] installs psycopg2)."""
    import importlib.util

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme:
        raise UsageError(f"--storage {url!r} is not a database URL; use e.g. postgresql://user@host/db or sqlite:///path.db")
    if scheme in ("postgresql", "postgres"):
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module):
                return f"postgresql+{driver}://" + url.split("://", 1)[1]
        raise MissingDependencyError("--storage postgresql://... needs a PostgreSQL driver: pip install 'tunesvc[postgres]'")
    return url


def study_name(info: DeviceInfo, tpl, dtype: str, shape) -> str:
    """One study per problem: device, template, template version, dtype and shape."""
    return f"tunesvc|{info.fingerprint.key}|{tpl.name}|{tpl.source_hash}|{dtype}|{shape_str(shape)}"


def _make_strategy(name: str, space, seed, storage: str, study: str):
    """The strategy, retried a few times: processes that create the same fresh Optuna storage at
    once can trip over each other's schema creation; the second attempt finds it made."""
    for attempt in range(5):
        try:
            return search.make(name, space, seed, storage=storage, study_name=study)
        except UsageError:
            raise
        except Exception:  # sqlalchemy's OperationalError / IntegrityError; optuna may wrap them
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def _build_workers(requested: int | None, info: DeviceInfo, isolate: bool) -> int:
    """Default: one builder beside a GPU; none beside a CPU device, whose cores the compiler
    would take from the kernel being timed (and so make its timing noisier)."""
    if not isolate:
        return 0
    if requested is not None:
        return requested
    return 0 if info.device_type == "cpu" else 1


def _runner(tpl, shape, dtype, info, method, seed, isolate: bool, timeout):
    """The Worker (child process) that evaluates candidates, or an in-process Evaluator."""
    from ..measure.worker import Job, Worker, template_ref

    ref = template_ref(tpl) if isolate else None
    if ref is None:
        return Evaluator(open_device(info), tpl, shape, dtype, method, seed=seed or 0), None
    job = Job(ref, tuple(shape), dtype, info, method, seed or 0)
    return Worker(job, timeout), job


def confirm_leaders(runner, candidates, method: Method) -> list[Measurement]:
    """Re-measure the leaders interleaved when their intervals overlap the best's; [] if they don't."""
    leaders = sorted((m for m in candidates if m.ok), key=lambda m: m.time)[: max(method.confirm, 0)]
    if len(leaders) < 2:
        return []
    best_hi = interval(leaders[0].timing)[1] * (1 + method.drift)
    close = [leaders[0]] + [m for m in leaders[1:] if interval(m.timing)[0] <= best_hi]
    if len(close) < 2:
        return []
    fresh = runner.compare([m.config for m in close])
    # Keep what the first measurement knew that a re-measurement does not: the compile time.
    return [replace(f, compile_seconds=old.compile_seconds) for f, old in zip(fresh, close)]


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
    *,
    patience: int | None = None,
    min_improvement: float = 0.01,
    timeout: float | None = 60.0,
    isolate: bool = True,
    build_workers: int | None = None,
    storage: str | None = None,
    study: str | None = None,
) -> TuneResult:
    """Tune ``template`` for ``shape`` on ``device``; store and return what was measured.

    Stops after ``trials`` new measurements, after ``time_budget`` seconds, after
    ``patience`` trials without an improvement of ``min_improvement`` (a fraction),
    or when every valid config has been measured, whichever comes first. With no
    limit at all, 50 trials.

    Candidates run in a worker process (``isolate``) that is killed after
    ``timeout`` seconds per phase (build, run) and replaced after a crash.
    ``build_workers`` processes compile upcoming configs meanwhile. The search
    state lives in an Optuna ``storage`` (default: an SQLite file beside the
    database), in a study named per problem, so a stopped run resumes and
    several processes or machines can share one search.
    """
    rules = check_options(trials, time_budget, patience, min_improvement, timeout, build_workers)
    if trials is None and time_budget is None and patience is None:
        rules = replace(rules, trials=50)
    tpl, shape, dtype, info = prepare(template, shape, dtype, device)
    search.check_name(strategy)  # before the database is opened: bad input leaves no file behind
    shared = storage is not None
    storage = rdb_url(storage) if shared else default_storage(Path(db).expanduser() if db else default_db_path())
    space = search.SearchSpace.from_template(tpl, Context(shape, dtype, info))
    study = study or study_name(info, tpl, dtype, shape)
    strat = _make_strategy(strategy, space, seed, storage, study)
    if shared and not hasattr(strat, "study"):
        raise UsageError(f"--storage shares the search state of Optuna strategies; --strategy {strategy} keeps none: use --strategy tpe")
    store = Store(db)
    store.put_device(info)
    known = store.measurements(info.fingerprint.key, tpl.name, tpl.source_hash, dtype, shape)
    for config, m in known.items():
        strat.tell(config, m)
    # Transfer: first try the best configs stored for neighbouring shapes and related devices.
    strat.prefer(transfer.seeds_from_store(store, tpl.name, tpl.source_hash, dtype, transfer.Problem(info.fingerprint, shape), space))
    runner, job = _runner(tpl, shape, dtype, info, method, seed, isolate, timeout)
    n_builders = _build_workers(build_workers, info, job is not None)
    builders = None
    if n_builders:
        from ..measure.worker import Builders

        builders = Builders(job, n_builders, timeout)
    progress = _Progress(time.perf_counter(), min((m for m in known.values() if m.ok), key=lambda m: m.time, default=None))
    measured: list[Measurement] = []
    queue = []
    if space.default is not None and strat.unseen[space.index[space.default]]:  # not in the DB, nor in a shared study
        queue.append(space.default)
        strat.unseen[space.index[space.default]] = False  # so the strategy does not propose it again

    def record(m: Measurement) -> None:
        store.put(Record(info.fingerprint, tpl.name, tpl.source_hash, dtype, shape, m))

    try:
        stop = "space exhausted"
        while True:
            reason = stop_reason(rules, progress)
            if reason:
                stop = reason
                break
            # With builders, ask a few configs ahead so they can compile while this one is timed.
            while len(queue) < 1 + n_builders and (c := strat.ask()) is not None:
                queue.append(c)
            if not queue:
                break
            config = queue.pop(0)
            if builders:
                builders.prefetch(queue)
            m = runner.evaluate(config)
            strat.tell(config, m)
            record(m)
            measured.append(m)
            progress.record(m, rules.min_improvement)
            if on_trial:
                on_trial(TrialEvent(len(measured), m, progress.best, time.perf_counter() - progress.start))
        confirmed = confirm_leaders(runner, [*known.values(), *measured], method) if method.confirm else []
        for m in confirmed:
            record(m)
    finally:
        if builders:
            builders.close()
        if hasattr(runner, "close"):
            runner.close()
    latest = {m.config: m for m in [*known.values(), *measured, *confirmed]}
    best = min((m for m in latest.values() if m.ok), key=lambda m: m.time, default=None)
    default_cfg = tpl.default_config()
    default = latest.get(default_cfg)
    failures: dict[str, int] = {}
    for m in measured:
        if not m.ok:
            failures[m.status] = failures.get(m.status, 0) + 1
    return TuneResult(tpl.name, shape, dtype, info, strategy, len(space), default, best, tuple(measured),
                      len(known), time.perf_counter() - progress.start, stop, str(store.path), failures,
                      stop_rules=rules.describe(), confirmed=tuple(confirmed), isolated=job is not None,
                      replaced_workers=getattr(runner, "replaced", 0), build_workers=n_builders,
                      storage=_redact(storage), study=study)


def _redact(url: str) -> str:
    """A storage URL fit to print: without a password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
