"""tune_all(): every built-in template over a preset of common shapes, then an export to share.

Resumable: a problem that already has its preset's number of measurements in
the database is not tuned again, and one that has some gets only the rest
(the tuner reuses what is stored). One progress callback covers the whole run.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .. import templates
from ..cache import Store
from ..cache.exchange import ExportSummary, export
from ..devices import select_device
from ..errors import UsageError
from ..identity import normalise_name
from .options import StopRules
from ..types import DeviceInfo, Problem


@dataclass(frozen=True)
class Preset:
    """Shapes per template, how many configs to measure per problem, and the dtypes."""

    name: str
    description: str
    shapes: Mapping[str, tuple]
    trials: int
    dtypes: tuple[str, ...] = ("float32",)


_LLM = {  # shapes of common transformer layers (hidden 4096, MLP 11008, heads of 128)
    "matmul": ((1, 4096, 4096), (16, 4096, 4096), (128, 4096, 4096), (2048, 4096, 4096), (2048, 11008, 4096),
               (2048, 4096, 11008), (512, 768, 768), (512, 3072, 768), (1024, 1024, 1024), (4096, 4096, 4096)),
    "reduce": ((4096, 4096), (2048, 32000), (8192, 768), (128, 32768), (1, 1 << 24)),
    # BxHqxHkvxQxKVxD: multi-head (Hkv = Hq) as before, and Llama-3's 32 query heads over 8 KV heads
    "attention": ((1, 32, 32, 1, 4096, 128), (8, 32, 32, 1, 2048, 128), (1, 32, 32, 512, 512, 128), (1, 12, 12, 128, 128, 64),
                  (1, 32, 32, 2048, 2048, 128), (1, 32, 8, 1, 8192, 128), (1, 32, 8, 1024, 1024, 128)),
    # BxNxKxBITSxG: the decode projections of an 8B model (below), int4 and int8
    "gemv_q": ((1, 4096, 4096, 4, 32), (1, 14336, 4096, 4, 32), (1, 4096, 14336, 4, 32), (1, 4096, 4096, 8, 32),
               (4, 4096, 4096, 4, 32)),
    "gemv_q_zp": ((1, 4096, 4096, 4, 128), (1, 14336, 4096, 4, 128)),
}

# Decode and prefill of two open models, every kernel of a layer at its real shape:
# Llama-3.1-8B (hidden 4096, MLP 14336, vocabulary 128256, 32 query heads over 8 KV heads of 128)
# and Llama-3.2-1B (hidden 2048, MLP 8192, the same vocabulary and heads, head dim 64). gemv_q holds
# the decode projections (N x K = outputs x inputs: q and o, k and v, gate and up, down, the vocabulary
# head) in int4 in groups of 32 (llama.cpp's Q4_0 format of values), two in int8 (Q8_0), and a batch
# of 4 rows (speculative decoding); gemv_q_zp int4 in groups of 128 with zero points (GPTQ, AWQ).
_8B = ((4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (128256, 4096))
_1B = ((2048, 2048), (512, 2048), (8192, 2048), (2048, 8192), (128256, 2048))
_MODELS = {
    "gemv_q": tuple((1, n, k, 4, 32) for n, k in _8B + _1B) + ((1, 4096, 4096, 8, 32), (1, 14336, 4096, 8, 32),
                                                               (4, 4096, 4096, 4, 32), (4, 14336, 4096, 4, 32)),
    "gemv_q_zp": ((1, 4096, 4096, 4, 128), (1, 14336, 4096, 4, 128), (1, 4096, 14336, 4, 128)),
    # decode over KV caches of 1k to 32k (8B), 4k (1B), a batch of 8 sequences
    "attention": tuple((1, 32, 8, 1, kv, 128) for kv in (1024, 4096, 16384, 32768)) + ((1, 32, 8, 1, 4096, 64), (8, 32, 8, 1, 2048, 128)),
    # four speculative queries at the end of the cache, and prefill
    "attention_causal": ((1, 32, 8, 4, 4096, 128), (1, 32, 8, 4, 32768, 128), (1, 32, 8, 512, 512, 128), (1, 32, 8, 2048, 2048, 128)),
    "matmul": ((128, 4096, 4096), (128, 1024, 4096), (128, 14336, 4096), (128, 4096, 14336)),  # a 128-token prefill's projections
    "reduce": ((1, 4096), (128, 4096), (1, 128256)),  # RMSNorm's sums of squares at decode and prefill, the logits
}
PRESETS = {
    "small": Preset("small", "a quick run: one or two small shapes per template, 8 configs each", {
        "matmul": ((128, 128, 128), (256, 256, 256)),
        "reduce": ((256, 4096),),
        "attention": ((1, 4, 4, 16, 256, 64), (1, 8, 2, 1, 1024, 64)),
        "gemv_q": ((1, 512, 4096, 4, 32),),
        "gemv_q_zp": ((1, 512, 4096, 4, 128),),
    }, trials=8),
    "full": Preset("full", "a release run: shapes of common transformer layers, 60 configs each, float16 where the device has it",
                   _LLM, trials=60, dtypes=("float32", "float16")),
    "llm": Preset("llm", "decode and prefill of Llama-3.1-8B and Llama-3.2-1B at their real shapes (quantized projections, "
                         "grouped-query attention), 20 configs each; float16 scales everywhere, float16 KV caches "
                         "where the device has cl_khr_fp16",
                  _MODELS, trials=20, dtypes=("float32", "float16")),
}


@dataclass(frozen=True)
class Outcome:
    """What happened to one problem: ``tuned``, ``done earlier``, ``failed`` (no config ran correctly)
    or ``skipped`` (with the reason)."""

    problem: Problem
    status: str
    new_trials: int = 0
    best_time: float | None = None
    best_gflops: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Progress:
    """Reported after every trial and every problem: for one progress display."""

    done: int  # trials done in this run
    total: int  # trials planned in this run
    problem: Problem  # the problem being tuned, or the one just finished
    best_gflops: float | None = None
    problems_done: int = 0  # problems finished (tuned, done earlier, failed or skipped)
    problems: int = 0  # problems of the plan this device can run
    trials_done: int = 0  # trials of the current problem


@dataclass(frozen=True)
class TuneAllResult:
    device: DeviceInfo
    preset: str
    outcomes: tuple[Outcome, ...]
    export: ExportSummary
    elapsed: float
    db_path: str = ""
    stopped: str = ""  # why the run ended early, if it did

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.status == "failed")


def shapes_for(preset: Preset, template) -> tuple:
    """A template's shapes in a preset: by its name, else its family (``reduce_max`` -> ``reduce``), else its default."""
    for key in (template.name, template.name.split("_")[0]):
        if key in preset.shapes:
            return preset.shapes[key]
    return (template.default_shape,)


def plan(preset: Preset, info: DeviceInfo, names=None) -> tuple[list[Problem], list[Outcome]]:
    """The problems this device can run, and the ones it cannot (skipped, with the reason)."""
    from .tuner import check_fits

    problems, skipped = [], []
    for name in names or sorted(templates.BUILTIN):
        tpl = templates.get(name)
        for shape in shapes_for(preset, tpl):
            for dtype in preset.dtypes:
                p = Problem(tpl.name, tpl.source_hash, tuple(shape), dtype, info.fingerprint)
                try:
                    tpl.parse_shape(shape)
                    tpl.check_dtype(dtype, info)
                    check_fits(tpl, tuple(shape), dtype, info)
                except UsageError as e:
                    skipped.append(Outcome(p, "skipped", reason=str(e)))
                    continue
                problems.append(p)
    return problems, skipped


def default_output(info: DeviceInfo, preset: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", normalise_name(info.name)).strip("-") or "device"
    driver = re.sub(r"[^a-z0-9]+", "-", info.fingerprint.driver.split(" ")[0].lower()).strip("-")  # one file per driver
    return Path(f"tunesvc-{info.fingerprint.backend}-{driver + '-' if driver else ''}{slug}-{preset}.jsonl.gz")


def tune_all(device=None, preset: str = "small", time_budget: float | None = None, db=None, out=None,
             templates_only=None, on_progress: Callable[[Progress], None] | None = None, trials: int | None = None,
             **tune_options) -> TuneAllResult:
    """Tune every built-in template (or ``templates_only``) over ``preset`` on ``device``; export the device's records.
    ``trials`` replaces the preset's configs per problem."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    StopRules(trials=trials, time_budget=time_budget)  # the same checks as tune's, before any device is touched
    from .options import from_keywords

    from_keywords(**tune_options)  # a strategy, its settings, other tune options: checked now, not per problem
    chosen = PRESETS[preset] if trials is None else dataclasses.replace(PRESETS[preset], trials=trials)
    info = select_device(device)
    path = Path(out) if out else default_output(info, preset)
    if not path.parent.is_dir():  # say so before the tuning, not after it
        raise UsageError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist; create it or choose another --out")
    problems, outcomes = plan(chosen, info, templates_only)
    store = Store(db)
    try:
        stored = {p: _stored(store, p) for p in problems}
    finally:
        store.close()
    remaining = {p: max(0, chosen.trials - len(m)) for p, m in stored.items()}
    ok_earlier = {p for p, m in stored.items() if any(x.ok for x in m.values())}
    run = _Run(info, db, chosen, remaining, ok_earlier, time_budget, on_progress, tune_options)
    for p in problems:
        outcomes.append(run.problem(p))
        run.finished += 1
        run.report(p, outcomes[-1].best_gflops)
    summary = export(path, db, device=info.fingerprint.key)
    return TuneAllResult(info, preset, tuple(outcomes), summary, time.perf_counter() - run.start, run.db_path, run.stopped)


def _stored(store: Store, p: Problem) -> dict:
    """What was measured before for this problem: config -> measurement."""
    return store.measurements(p)


@dataclass
class _Run:
    """State of one tune-all run: the budget left and the progress so far."""

    info: DeviceInfo
    db: object
    preset: Preset
    remaining: dict
    ok_earlier: set  # problems with a correct config stored before this run
    time_budget: float | None
    on_progress: Callable | None
    tune_options: dict
    start: float = field(default_factory=time.perf_counter)
    done: int = 0
    db_path: str = ""
    stopped: str = ""
    finished: int = 0  # problems finished
    trials_done: int = 0  # of the problem being tuned

    @property
    def total(self) -> int:
        return sum(self.remaining.values())

    def problem(self, p: Problem) -> Outcome:
        from .tuner import tune

        want = self.remaining[p]
        self.trials_done = 0
        if want == 0:
            if p not in self.ok_earlier:
                return Outcome(p, "failed", reason=f"{self.preset.trials} configs measured earlier, none ran correctly; "
                                                   "'tunesvc show --status build' (or launch, wrong_result) says why")
            return Outcome(p, "done earlier", reason=f"{self.preset.trials} configs already measured")
        budget = self._budget_share(p)
        if budget is not None and budget <= 0:
            self.stopped = f"time budget of {self.time_budget:g} s spent"
            return Outcome(p, "skipped", reason=self.stopped + "; run again to resume")
        base = self.done

        def trial(ev):
            self.done, self.trials_done = base + ev.index, ev.index
            self.report(p, ev.best.gflops if ev.best else None)

        self.report(p, None)

        r = tune(p.template, p.shape, p.dtype, self.info, db=self.db, trials=want, time_budget=budget, on_trial=trial,
                 **self.tune_options)
        self.done = base + want  # a problem that stopped early (space exhausted, budget) counts as done
        self.db_path = r.db_path
        best = r.best
        if best is None or not r.ok:
            return Outcome(p, "failed", len(r.measured), reason=r.failure())
        return Outcome(p, "tuned", len(r.measured), best.time, best.gflops, "")

    def _budget_share(self, p: Problem) -> float | None:
        """An even share of the time left among the problems still to tune."""
        if self.time_budget is None:
            return None
        left = self.time_budget - (time.perf_counter() - self.start)
        todo = [q for q, n in self.remaining.items() if n]
        later = len(todo) - todo.index(p)
        return left / later if left > 0 else 0.0

    def report(self, p: Problem, best_gflops) -> None:
        if self.on_progress:
            self.on_progress(Progress(self.done, self.total, p, best_gflops, self.finished, len(self.remaining),
                                      self.trials_done))
