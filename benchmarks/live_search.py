"""Live search on the real device: wall-clock time to within 5% of the best known config.

The replay benchmarks count evaluations; live tuning also pays for builds,
verification, failures and timing, and for the strategy's own thinking. For each
problem (matmul 1024³, decode attention, a reduction) and each strategy (the
default, Optuna TPE, random search), this tunes from an empty database for a
fixed time and records when each measurement came in. The best known config of
a problem is the fastest measured by any run here (every run is on the same
device, in the same session); a run's figure is the wall time until it first
measured a config within 5% of that. Each strategy's own time per evaluation
(its ask and tell, timed around the calls) is reported beside it, and how many
configs were abandoned as hopeless (docs/benchmarks.md, issue 12).

``--abandon`` instead tunes matmul 2048³ three times with the same seed and trials:
with the shipped method (early abandon of hopeless configs, by a probe of an
eighth of the grid or by their first launches; the time cap on re-measuring the
leaders; three runs of a config whose launch takes a second or more), without
the abandon (``Method(abandon=0)``, which turns the probe off too), and with none of the three
(``abandon=0, confirm_seconds=inf, slow_runs=0``: the method before issue 12),
and prints the wall times and best configs. With ``--abandon-strategy random`` (the
default) both runs measure the same configs in the same order, so any difference
is the abandon's; the default strategy's path depends on the times it is told.

Run it on a quiet machine; it measures wall time. About 8 minutes with the
defaults:

    .venv/bin/python benchmarks/live_search.py --abandon --trials 12
    .venv/bin/python benchmarks/live_search.py --seconds 30
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tunesvc  # noqa: E402
from tunesvc import search  # noqa: E402
from tunesvc.measure.evaluator import Method, abandoned  # noqa: E402

PROBLEMS = {  # name -> (template, shape, share of --seconds)
    "matmul 1024^3": ("matmul", (1024, 1024, 1024), 1.0),
    "attention decode 1x32x1x4096x128": ("attention", (1, 32, 1, 4096, 128), 0.7),
    "reduce_sum 4096x4096": ("reduce_sum", (4096, 4096), 0.7),
}
#: small shapes of the same templates, for a smoke run of the script (--quick)
QUICK = {"matmul 1024^3": (64, 64, 64), "attention decode 1x32x1x4096x128": (1, 2, 1, 64, 16),
         "reduce_sum 4096x4096": (64, 256)}
STRATEGIES = ("ensemble", "tpe", "random")
#: seconds spent in each strategy's ask and tell, and their count, by registered name
OVERHEAD: dict[str, list[float]] = {}


def timed(name: str) -> str:
    """Register a subclass of strategy ``name`` that times its own ask and tell; return its name.
    (The tuner makes the strategy itself, so the timing has to live in the class.)"""
    import importlib

    module, cls_name = search.STRATEGIES[name].split(":")
    base = getattr(importlib.import_module(module), cls_name)
    key = f"timed-{name}"

    def ask(self):
        t0 = time.perf_counter()
        try:
            return base.ask(self)
        finally:
            OVERHEAD.setdefault(key, []).append(time.perf_counter() - t0)

    def tell(self, config, measurement):
        t0 = time.perf_counter()
        try:
            return base.tell(self, config, measurement)
        finally:
            OVERHEAD.setdefault(key, []).append(time.perf_counter() - t0)

    cls = type(f"Timed{cls_name}", (base,), {"ask": ask, "tell": tell})
    setattr(sys.modules[__name__], cls.__name__, cls)
    search.STRATEGIES[key] = f"{__name__}:{cls.__name__}"
    return key


@dataclasses.dataclass
class Run:
    problem: str
    strategy: str
    trace: list  # (seconds since the start, time of the config or inf, abandoned)
    evaluations: int
    overhead: float  # seconds in the strategy's ask and tell
    best_config: dict
    elapsed: float


def run_one(problem: str, strategy: str, seconds: float, seed: int, device, folder: Path) -> Run:
    template, shape, _ = PROBLEMS[problem]
    key = timed(strategy)
    OVERHEAD.pop(key, None)
    trace = []

    def on_trial(ev) -> None:
        m = ev.measurement
        trace.append((ev.elapsed, m.time if m.ok else float("inf"), abandoned(m)))

    db = folder / f"{template}-{strategy}-{seed}.db"
    r = tunesvc.tune(template, shape, device=device, db=db, time_budget=seconds, seed=seed, strategy=key, on_trial=on_trial)
    return Run(problem, strategy, trace, len(trace), sum(OVERHEAD.get(key, [])),
               dict(r.best.config) if r.ok else {}, r.elapsed)


def time_to(trace: list, target: float) -> float | None:
    return next((t for t, x, _ in trace if x <= target), None)


def report(runs: list[Run]) -> None:
    print(f"\n{'problem':34s} {'strategy':9s} {'to 5% (s)':>10s} {'evals':>6s} {'abandoned':>9s} "
          f"{'best/known':>10s} {'ms/eval (strategy)':>18s}")
    for problem in PROBLEMS:
        rs = [r for r in runs if r.problem == problem]
        if not rs:
            continue
        known = min(x for r in rs for _, x, _ in r.trace)
        for r in rs:
            t = time_to(r.trace, known * 1.05)
            best = min(x for _, x, _ in r.trace)
            print(f"{problem:34s} {r.strategy:9s} {('%.1f' % t) if t is not None else 'not in ' + str(round(r.elapsed)):>10s} "
                  f"{r.evaluations:6d} {sum(a for *_, a in r.trace):9d} {best / known:10.3f} "
                  f"{1e3 * r.overhead / max(r.evaluations, 1):18.2f}")
        print(f"{'':34s} best known: {known * 1e3:.3f} ms")


def abandon_check(trials: int, seed: int, strategy: str, device, folder: Path, side: int = 2048) -> None:
    """matmul 2048³ with and without the early abandon: same seed, same trials, fresh databases.
    Three runs: the default method; without the abandon (``abandon=0``); and without the abandon,
    the time cap on the leaders' re-measurement (``confirm_seconds=inf``: 31 rounds whatever they
    cost) or the three runs of a slow config (``slow_runs=0``), the method as it was before."""
    import math

    shape = (side, side, side)
    out = {}
    runs = (("abandon", Method()), ("no abandon", Method(abandon=0.0)),
            ("none", Method(abandon=0.0, confirm_seconds=math.inf, slow_runs=0)))
    for label, method in runs:
        t0 = time.perf_counter()
        r = tunesvc.tune("matmul", shape, device=device, db=folder / f"mm2048-{label.replace(' ', '')}.db", trials=trials,
                         seed=seed, strategy=strategy, method=method)
        out[label] = (time.perf_counter() - t0, r)
        n_ab = sum(abandoned(m) for m in r.measured)
        n_probe = sum(bool(m.extra.get("unverified")) for m in r.measured)  # stopped by a probe of the grid
        print(f"matmul {side}^3 {label:10s}: {out[label][0]:7.1f} s wall, {len(r.measured)} trials "
              f"({n_ab} abandoned, {n_probe} of them by a probe), "
              f"best {r.best.time * 1e3:.2f} ms {' '.join(f'{k}={v}' for k, v in r.best.config.items())}", flush=True)
    ta, ra = out["abandon"]
    for label in ("no abandon", "none"):
        tn, rn = out[label]
        same = ra.best.config == rn.best.config
        order = [m.config for m in ra.measured] == [m.config for m in rn.measured]
        print(f"against '{label}': wall time cut {tn / ta:.2f}x; same best config: {'yes' if same else 'no'}; "
              f"configs measured in the same order: {'yes' if order else 'no'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="tuning time of each run (matmul; the others get 70%%)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated keys of PROBLEMS")
    ap.add_argument("--abandon", action="store_true", help="the matmul 2048^3 abandon check instead")
    ap.add_argument("--trials", type=int, default=12, help="trials of each --abandon run")
    ap.add_argument("--abandon-strategy", default="random")
    ap.add_argument("--quick", action="store_true", help="small shapes and 2048 -> 128: a smoke run of the script")
    args = ap.parse_args()
    if args.quick:
        for k, shape in QUICK.items():
            PROBLEMS[k] = (PROBLEMS[k][0], shape, PROBLEMS[k][2])
    folder = Path(tempfile.mkdtemp(prefix="tunesvc-live-"))
    if args.abandon:
        abandon_check(args.trials, args.seed, args.abandon_strategy, args.device, folder, 128 if args.quick else 2048)
        return
    runs = []
    for problem in args.problems.split(","):
        for rep in range(args.repeats):
            for s in args.strategies.split(","):
                seconds = args.seconds * PROBLEMS[problem][2]
                runs.append(run_one(problem, s, seconds, args.seed + rep, args.device, folder))
                r = runs[-1]
                print(f"{problem} {s} seed {args.seed + rep}: {r.evaluations} evaluations in {r.elapsed:.0f} s, "
                      f"best {min(x for _, x, _ in r.trace) * 1e3:.3f} ms", flush=True)
    report(runs)
    per_eval = {s: statistics.mean(r.overhead / max(r.evaluations, 1) for r in runs if r.strategy == s)
                for s in args.strategies.split(",")}
    print("\nstrategy time per evaluation (ask + tell): " + ", ".join(f"{s} {1e3 * v:.2f} ms" for s, v in per_eval.items()))


if __name__ == "__main__":
    main()
