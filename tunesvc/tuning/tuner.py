"""tune(): one tuning problem from start to stored result.

Target (template + shape + dtype + device, checked once) -> space of valid configs ->
strategy asks through the problem's Optuna study, a runner measures
(:func:`tunesvc.measure.drive.drive`) -> every measurement stored, and put on its trial.
Configs measured before for the same problem are reused, not run again; the study lives
beside the database (or in a shared ``--storage``), so an interrupted run resumes and
processes sharing a study never measure one config twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .. import search, templates
from ..cache import Store
from ..devices import open_device, select_device
from ..errors import InvalidShapeError
from ..measure.drive import confirm_leaders, drive
from ..search import transfer
from ..templates.base import Context, KernelTemplate
from ..types import DeviceInfo, Measurement, Problem, Record, shape_str
from .options import RunOptions, SearchOptions, StopRules, from_keywords
from .study import make_strategy, redact, set_aside_orphan_studies, storage_for, study_attrs, study_name

if TYPE_CHECKING:  # for the annotation only: the study search (and Optuna) are imported when used
    from ..search.live import StudySearch

log = logging.getLogger(__name__)


# ---- the problem, checked once --------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A problem resolved for tuning: its template, the device's description, and the Problem value."""

    template: KernelTemplate
    device: DeviceInfo
    problem: Problem

    @property
    def context(self) -> Context:
        return Context(self.problem.shape, self.problem.dtype, self.device)


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


def resolve(template, shape=None, dtype: str = "float32", device=None) -> Target:
    """Check everything a user gave (template name or file, shape text or tuple, dtype, device)
    once; the template's default shape when ``shape`` is None."""
    tpl = templates.get(template)
    shape = tpl.parse_shape(shape) if shape is not None else tuple(tpl.default_shape)
    tpl.check_dtype(dtype)
    info = select_device(device)
    tpl.check_dtype(dtype, info)
    check_fits(tpl, shape, dtype, info)
    return Target(tpl, info, Problem(tpl.name, tpl.source_hash, tuple(shape), dtype, info.fingerprint))


# ---- what a run reports -----------------------------------------------------------------------
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
    status = max(sorted(counts), key=lambda s: counts[s])
    example = next((m.reason for m in failed if m.status == status and m.reason), "")
    text = f"no config ran correctly: {counts[status]} of {len(failed)} failed with '{status}'"
    if example:
        text += f" (first: {example.splitlines()[0][:200]})"
    return text + "; " + FIXES.get(status, "see 'tunesvc show' for the reasons")


# ---- one run ----------------------------------------------------------------------------------
def _runner(target: Target, run: RunOptions, seed: int | None):
    """The isolated Worker (child process) that evaluates candidates, or an in-process Evaluator
    (also for a template with no file a child could load it from); and the worker's Job."""
    from ..measure.evaluator import Evaluator
    from ..measure.worker import Job, Worker

    ref = templates.ref(target.template) if run.isolate else None
    p = target.problem
    if ref is None:
        return Evaluator(open_device(target.device), target.template, p.shape, p.dtype, run.method, seed=seed or 0), None
    job = Job(ref, tuple(p.shape), p.dtype, target.device, run.method, seed or 0)
    return Worker(job, run.timeout), job


@dataclass
class _Run:
    """One tuning run's state: what the stopping rules and the result look at."""

    target: Target
    store: Store
    stop: StopRules
    known: dict  # config -> measurement stored before this run
    start: float = field(default_factory=time.perf_counter)
    best: Measurement | None = None
    measured: list = field(default_factory=list)
    since_improvement: int = 0
    on_trial: Callable[[TrialEvent], None] | None = None
    isolated: bool = False  # candidates ran in a worker process
    replaced: int = 0  # workers lost and replaced
    builders: int = 0
    device_stored: bool = False  # the device's description, remembered for lookups by id
    search: StudySearch | None = None  # the StudySearch: each stored measurement ends its trial

    def __post_init__(self):
        self.best = min((m for m in self.known.values() if m.ok), key=lambda m: m.time, default=None)

    def record(self, m: Measurement) -> int | None:
        """Store a measurement; the record's id."""
        record = Record.of(self.target.problem, m)
        self.store.put(record)
        if not self.device_stored:  # after the first measurement: a run that stores none leaves the file as it was
            self.store.put_device(self.target.device)
            self.device_stored = True
        return record_id(self.store, record)

    def measured_one(self, m: Measurement) -> None:
        rid = self.record(m)
        if self.search is not None:
            self.search.record(m, rid)
        self.measured.append(m)
        log.debug("trial %d: %s %s %s", len(self.measured), " ".join(f"{k}={v}" for k, v in m.config.items()), m.status,
                  f"{m.time:.3e} s" if m.ok else m.reason[:120])
        self.since_improvement += 1
        if m.ok and (self.best is None or m.time < self.best.time):
            if self.best is None or m.time <= self.best.time * (1 - self.stop.min_improvement):
                self.since_improvement = 0
            self.best = m
        if self.on_trial:
            self.on_trial(TrialEvent(len(self.measured), m, self.best, time.perf_counter() - self.start))

    def should_stop(self) -> str | None:
        return self.stop.reason(len(self.measured), self.since_improvement, self.start)

    def best_time(self) -> float | None:
        """The best time so far (stored or new): the runner abandons a config clearly slower."""
        return self.best.time if self.best is not None else None


def record_id(store: Store, record: Record) -> int | None:
    """The id of a stored record (the row of its key), for the study's trial."""
    from ..cache.schema import KEY, TABLE, record_to_row

    row = record_to_row(record)
    found = store.read(f"SELECT id FROM {TABLE} WHERE " + " AND ".join(f"{c} = ?" for c in KEY),
                       tuple(row[c] for c in KEY)).fetchone()
    return int(found[0]) if found else None


def known_ids(store: Store, problem: Problem) -> dict:
    """Config -> record id of every stored record of a problem."""
    from ..cache.schema import KEY, TABLE, row_to_record

    cur = store.read(f"SELECT * FROM {TABLE} WHERE " + " AND ".join(f"{c} = ?" for c in KEY[:-1]), problem.key)
    names = [d[0] for d in cur.description]
    return {row_to_record(dict(zip(names, r))).config: r[names.index("id")] for r in cur}


def _open_search(target: Target, space, options: SearchOptions, db) -> tuple:
    """(search, storage URL, study name): the strategy searching through this problem's study."""
    storage = storage_for(db, options.storage)
    study = options.study or study_name(target.problem)
    attrs = study_attrs(target.problem, target.device.name, options.strategy_name)
    return make_strategy(options.strategy_name, space, options.seed, storage, study, attrs,
                         options.strategy_options), storage, study


def _measure(target: Target, space, strat, state: _Run, run: RunOptions, seed) -> tuple[str, list]:
    """Drive the search to a stop, then re-measure close leaders; (stop reason, confirmed)."""
    runner, job = _runner(target, run, seed)
    state.isolated = job is not None
    state.builders = n_builders = run.builders(target.device) if job is not None else 0
    builders = None
    if n_builders:
        from ..measure.worker import Builders

        builders = Builders(job, n_builders, run.timeout)
    try:
        strat.measure_first(space.default)  # unless the database or a shared study has it
        stop = drive(strat, runner, state.should_stop, state.measured_one, lookahead=n_builders,
                     prefetch=builders.prefetch if builders else None, best=state.best_time)
        confirmed = confirm_leaders(runner, [*state.known.values(), *state.measured], run.method) if run.method.confirm else []
        for m in confirmed:
            strat.reflect(m, state.record(m))  # the study's best stays the database's
    finally:
        if builders:
            builders.close()
        runner.close()
        state.replaced = runner.replaced
    return stop, confirmed


def tune_problem(target: Target, *, db=None, stop: StopRules = StopRules(), search_options: SearchOptions = SearchOptions(),
                 run: RunOptions = RunOptions(), on_trial: Callable[[TrialEvent], None] | None = None) -> TuneResult:
    """Tune one resolved problem; store and return what was measured (see :func:`tune`)."""
    stop = stop.or_default()
    space = search.SearchSpace.from_template(target.template, target.context)
    if search_options.storage is None:
        set_aside_orphan_studies(db)  # before the database is made (see there)
    store = Store(db)  # the database before its study file: a study file without one is an orphan
    try:
        strat, storage, study = _open_search(target, space, search_options, db)
    except BaseException:
        store.close()
        raise
    try:
        p = target.problem
        known = store.measurements(p)
        strat.known(known, known_ids(store, p) if known else None)  # told to the strategy, and put in the study where it lacks them
        # Transfer: first try the best configs stored for neighbouring shapes and related devices,
        # and for this problem under earlier versions of the template (a parameter added since: its default).
        strat.prefer(transfer.seeds_from_store(store, p, space, defaults=target.template.default_config()))
        strat.expect(stop.trials)  # the strategy may size its opening by it (None: on time or patience)
        state = _Run(target, store, stop, known, on_trial=on_trial, search=strat)
        log.info("tuning %s on %s (%s): %d valid configs, %d measured before; %s; strategy %s", p, target.device.id,
                 target.device.name, len(space), len(known), stop.describe(), search_options.strategy_name)
        reason, confirmed = _measure(target, space, strat, state, run, search_options.seed)
    finally:
        strat.close()
        store.close()
    log.info("stopped: %s; %d new trials, best %s", reason, len(state.measured),
             f"{state.best.time:.3e} s" if state.best else "none")
    latest = {m.config: m for m in [*known.values(), *state.measured, *confirmed]}
    failures: dict[str, int] = {}
    for m in state.measured:
        if not m.ok:
            failures[m.status] = failures.get(m.status, 0) + 1
    return TuneResult(p.template, p.shape, p.dtype, target.device, search_options.strategy_name, len(space),
                      latest.get(target.template.default_config()),
                      min((m for m in latest.values() if m.ok), key=lambda m: m.time, default=None),
                      tuple(state.measured), len(known), time.perf_counter() - state.start, reason, str(store.path), failures,
                      stop_rules=stop.describe(), confirmed=tuple(confirmed), isolated=state.isolated,
                      replaced_workers=state.replaced, build_workers=state.builders,
                      storage=redact(storage), study=study)


def tune(template, shape=None, dtype: str = "float32", device=None, *, db=None,
         on_trial: Callable[[TrialEvent], None] | None = None, **options) -> TuneResult:
    """Tune ``template`` for ``shape`` on ``device``; store and return what was measured.

    ``options`` are the fields of :class:`~tunesvc.tuning.options.StopRules` (``trials``,
    ``time_budget``, ``patience``, ``min_improvement``), :class:`SearchOptions` (``strategy``,
    ``seed``, ``storage``, ``study``) and :class:`RunOptions` (``method``, ``timeout``,
    ``isolate``, ``build_workers``), or whole objects as ``stop=``, ``search_options=``, ``run=``.

    Stops after ``trials`` new measurements, after ``time_budget`` seconds, after ``patience``
    trials without an improvement of ``min_improvement`` (a fraction), or when every valid
    config has been measured, whichever comes first; with no limit at all, 50 trials.
    Candidates run in a worker process (``isolate``) that is killed after ``timeout`` seconds
    per phase (build, run) and replaced after a crash; ``build_workers`` processes compile
    upcoming configs meanwhile. The search state lives in an Optuna ``storage`` (default: an
    SQLite file beside the database), in a study named per problem, so a stopped run resumes
    and several processes or machines can share one search.
    """
    stop, search_options, run = from_keywords(**options)  # bad options: one line, before anything is opened
    target = template if isinstance(template, Target) else resolve(template, shape, dtype, device)
    return tune_problem(target, db=db, stop=stop, search_options=search_options, run=run, on_trial=on_trial)
