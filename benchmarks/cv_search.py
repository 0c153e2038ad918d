"""Choose the default strategy's settings by cross-validation over kernel families, on recorded spaces.

Settings tuned and scored on the same recorded spaces flatter themselves: the
figure is what they were fitted to. Here every candidate setting replays every
file; then, for each kernel family in turn (convolution, dedispersion, gemm,
pnpoly, ...), the candidate with the best mean score on the *other* families is
chosen and scored on the left-out family. The mean of those left-out scores is
the honest figure (the headline of docs/benchmarks.md); the in-sample figure
(the best candidate scored on the files it was chosen on) is printed beside it.
``--by device`` leaves out one file (one device) at a time instead.

Files that repeat another recording (convolution_A100_T4 is convolution_A100 as a
T4 file) are dropped, so no recording counts twice. Runs are cached in a JSON
file (``--cache``), so a grid can grow without replaying what was done.

Scores follow tunesvc.replay.score (Willemsen et al. 2024, budget 4x random
search's expected evaluations to 5%, at most 1000). Files with small budgets are
replayed more often (``repeats_for``): their scores are decided by a handful of
picks, so a few runs would be mostly noise, and their runs are cheap.

    .venv/bin/python benchmarks/cv_search.py --repeats 5 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

# One BLAS thread per process: the model's matrix-vector products are small, and several replay
# processes on a shared machine make threaded BLAS 20x slower, not faster.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tunesvc.replay.runner import RecordedRunner  # noqa: E402
from tunesvc.replay.score import ReplayRun, default_budget, run_once, summarize  # noqa: E402

#: every setting of the ensemble as issue 12's first round left them (its default, far05g50): each
#: candidate below is resolved against this, never against today's DEFAULTS, so a candidate means the
#: same runs whatever the default becomes (resolved against DEFAULTS, a changed default silently
#: changed the candidates spelled out against it: the second round's ``prior`` did)
BASE = {"start": 8, "discount": 0.95, "top": 0.1, "spread": 1, "arms": ["density", "local", "swarm", "hop"],
        "patience": 50, "patience_fraction": 0.5, "burst": 5, "start_fraction": 0.05, "patience_budget": 0.0,
        "design": "far", "far_pool": 0, "respread": "random", "bandwidth": 1.0, "lead": 0, "short_budget": 0,
        "prior": {}, "gamma": 0.15}
#: the candidate settings of the default strategy (name -> strategy, options); "current" is DEFAULTS
CANDIDATES: dict[str, tuple[str, dict]] = {
    # the default before issue 12, spelled out (resolved against BASE, as every candidate)
    "issue7": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm"], "start_fraction": 0.0, "design": "random"}),
    "g50r": ("ensemble", {"patience": 50, "patience_fraction": 0.5, "design": "random", "start_fraction": 0.0}),
    "sf05r": ("ensemble", {"start_fraction": 0.05, "patience": 50, "patience_fraction": 0.5, "design": "random"}),
    "current": ("ensemble", {"current": True}),  # today's DEFAULTS (resolve)
    "random": ("random", {}),
    "g50": ("ensemble", {"patience": 50, "patience_fraction": 0.5}),
    "g50keep": ("ensemble", {"patience": 50, "patience_fraction": 0.5, "scatter": "keep"}),
    "g50nob": ("ensemble", {"patience": 50, "patience_fraction": 0.5, "scatter": "keep", "reset_bandit": False}),
    "g30keep": ("ensemble", {"scatter": "keep"}),
    "g30none": ("ensemble", {"scatter": "none", "reset_bandit": False}),
    "g0hop": ("ensemble", {"patience": 0}),
    "s3": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm"], "start": 3}),
    "s5": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm"], "start": 5}),
    "s3sp": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm"], "start": 3, "spread": 3}),
    "s3loc": ("ensemble", {"patience": 0, "arms": ["local"], "start": 3}),
    "s3den": ("ensemble", {"patience": 0, "arms": ["density"], "start": 3}),
    "s3p2": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm"], "start": 3, "prior": {"density": 2}}),
    "s3p4": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm"], "start": 3, "prior": {"density": 4}}),
    "bo3": ("bo", {"lengthscale": 0.3}),
    "bo5": ("bo", {"lengthscale": 0.5}),
    "bo10": ("bo", {"lengthscale": 1.0}),
    "gpA": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm", "gp"], "start": 5}),
    "gpB": ("ensemble", {"patience": 0, "arms": ["local", "swarm", "gp"], "start": 5}),
    "gpC": ("ensemble", {"patience": 50, "patience_fraction": 0.5, "scatter": "keep",
                         "arms": ["density", "local", "swarm", "gp", "hop"], "start": 5}),
    "bo_s3": ("bo", {"lengthscale": 0.5, "start": 3, "fit": False}),
    "bo_s2": ("bo", {"lengthscale": 0.5, "start": 2, "fit": False}),
    "e3gp": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm", "gp"], "start": 3, "prior": {"gp": 3}}),
    "e3den": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm", "gp"], "start": 3, "prior": {"density": 3}}),
    "l20": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm", "gp"], "start": 3, "lead": 20}),
    "l40": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm", "gp"], "start": 3, "lead": 40}),
    "l20g": ("ensemble", {"patience": 50, "patience_fraction": 0.5, "scatter": "keep",
                          "arms": ["density", "local", "swarm", "gp", "hop"], "start": 3, "lead": 20}),
    "l20c": ("ensemble", {"patience": 0, "arms": ["density", "local", "swarm", "gp"], "start": 3, "lead": 20, "clip": 0.5}),
    "l20gc": ("ensemble", {"patience": 50, "patience_fraction": 0.5, "scatter": "keep",
                           "arms": ["density", "local", "swarm", "gp", "hop"], "start": 3, "lead": 20, "clip": 0.5}),
    "bo_c5": ("bo", {"start": 3, "fit": True, "clip": 0.5}),
    "sf10": ("ensemble", {"start_fraction": 0.1}),
    "sf10g50": ("ensemble", {"start_fraction": 0.1, "patience": 50, "patience_fraction": 0.5}),
    "sf20g50": ("ensemble", {"start_fraction": 0.2, "patience": 50, "patience_fraction": 0.5}),
    "sf05g50": ("ensemble", {"start_fraction": 0.05, "patience": 50, "patience_fraction": 0.5}),
    "sf10pb": ("ensemble", {"start_fraction": 0.1, "patience": 50, "patience_fraction": 0.5, "patience_budget": 0.05}),
    "sf10g50p2": ("ensemble", {"start_fraction": 0.1, "patience": 50, "patience_fraction": 0.5, "prior": {"density": 2}}),
    "far10pb": ("ensemble", {"start_fraction": 0.1, "patience": 50, "patience_fraction": 0.5, "patience_budget": 0.05, "design": "far"}),
    "far05g50": ("ensemble", {"start_fraction": 0.05, "patience": 50, "patience_fraction": 0.5, "design": "far"}),
    "far20pb": ("ensemble", {"start_fraction": 0.2, "patience": 50, "patience_fraction": 0.5, "patience_budget": 0.05, "design": "far"}),
    "farp10": ("ensemble", {"start_fraction": 0.05, "patience": 50, "patience_fraction": 0.5, "design": "far", "far_pool": 10}),
    "farp30": ("ensemble", {"start_fraction": 0.05, "patience": 50, "patience_fraction": 0.5, "design": "far", "far_pool": 30}),
    "farp10s": ("ensemble", {"start_fraction": 0.05, "start": 12, "patience": 50, "patience_fraction": 0.5, "design": "far", "far_pool": 10}),
    "farA": ("ensemble", {"start_fraction": 0.05, "patience": 50, "patience_fraction": 0.5, "design": "far", "respread": "far"}),
    "farB": ("ensemble", {"start_fraction": 0.05, "patience": 30, "patience_fraction": 0.25, "design": "far", "respread": "far"}),
    "farC": ("ensemble", {"start_fraction": 0.05, "patience": 50, "patience_fraction": 0.5, "design": "far", "respread": "far", "burst": 10}),
    "farD": ("ensemble", {"start_fraction": 0.05, "patience": 30, "patience_fraction": 0.25, "design": "far", "respread": "far", "burst": 10}),
    "s3p2g": ("ensemble", {"patience": 50, "patience_fraction": 0.5, "scatter": "keep", "start": 3, "prior": {"density": 2}}),
    # issue 12, second round, each a change to the default of the first round (BASE): the model
    # leads after the opening (``lead`` picks by the first arm) or starts with pseudo-wins
    # (``prior``); on a short known budget the model makes every pick after the opening
    # (``short_budget``); a sharper density model
    "prev": ("ensemble", {}),  # BASE itself
    "ld10": ("ensemble", {"lead": 10}),
    "ld20": ("ensemble", {"lead": 20}),
    "ld40": ("ensemble", {"lead": 40}),
    "pd2": ("ensemble", {"prior": {"density": 2}}),
    "pd4": ("ensemble", {"prior": {"density": 4}}),
    "ld20pd2": ("ensemble", {"lead": 20, "prior": {"density": 2}}),
    "sb50": ("ensemble", {"short_budget": 50}),
    "sb200": ("ensemble", {"short_budget": 200}),
    "bw05": ("ensemble", {"bandwidth": 0.5}),
    "sb50bw05": ("ensemble", {"short_budget": 50, "bandwidth": 0.5}),
    "sb50pd2": ("ensemble", {"short_budget": 50, "prior": {"density": 2}}),
    # issue 12, third round (2026-12-03): the shipped default (sb50pd2) with one more setting changed
    "sp2": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "spread": 2}),
    "gm25": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "gamma": 0.25}),
    "gm10": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "gamma": 0.10}),
    "dc90": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "discount": 0.9}),
    "tp20": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "top": 0.2}),
    "st5": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "start": 5}),
    "gm05": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "gamma": 0.05}),
    "gm07": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "gamma": 0.07}),
    "gm10ld20": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "gamma": 0.10, "lead": 20}),
    "gm10tp20": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "gamma": 0.10, "top": 0.2}),
    # issue 12, fourth round (2026-12-03): the last fraction of a known budget beside the best so far
    "pol05": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "polish": 0.05}),
    "pol10": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "polish": 0.10}),
    "pol20": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "polish": 0.20}),
    # issue 12, fifth round (2026-12-04): a failed proposal is no loss for the arm that made it
    "fc0": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "failure_credit": "none"}),
    "fc0gm10": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "failure_credit": "none", "gamma": 0.10}),
    # the local and hop arms' neighbours: one parameter changed (any of its values) before two
    "rc": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "ring": "changed"}),
    "rcgm10": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "ring": "changed", "gamma": 0.10}),
    "rf": ("ensemble", {"short_budget": 50, "prior": {"density": 2}, "ring": "few"}),
}

_runners: dict[tuple[str, bool], RecordedRunner] = {}


def runner(path: str, failures: bool = True) -> RecordedRunner:
    """The recorded file (once per process); without ``failures``, its failed configs dropped."""
    if (path, failures) not in _runners:
        import dataclasses

        r = RecordedRunner(path)
        if not failures:
            r = RecordedRunner(dataclasses.replace(r.recorded, configs=r.recorded.valid))
        _runners[(path, failures)] = r
    return _runners[(path, failures)]


def family(path: str) -> str:
    """The kernel family of a recorded file, from its name: convolution_kt_RTX_3090 -> convolution."""
    return Path(path).name.split(".")[0].split("_")[0]


def distinct(files: list[str]) -> list[str]:
    """The files less those that repeat another's recording (the same family and the same times)."""
    seen, out = {}, []
    for f in sorted(files, key=lambda f: ("_T4" in f, f)):  # keep the Kernel Tuner file of a pair
        rec = runner(f).recorded
        key = (family(f), len(rec.times), float(rec.times.sum()))
        if key not in seen:
            seen[key] = f
            out.append(f)
    return sorted(out)


def repeats_for(budget: int, repeats: int) -> int:
    """More runs where a run is short: about ``repeats`` x 1000 evaluations per file, at most 100 runs."""
    return max(repeats, min(100, repeats * 1000 // max(budget, 1)))


def resolve(strategy: str, options: dict) -> dict:
    """Every setting of a candidate: the ensemble's spelled out against BASE (``current``: today's
    DEFAULTS), so the runs and their cache keys change only when the candidate does."""
    if strategy != "ensemble":
        return dict(options)
    if options.get("current"):
        from tunesvc.search.ensemble import DEFAULTS

        options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in DEFAULTS.items()}
    out = {**BASE, **options}
    for k in ("transfer", "seed_picks"):  # how seeds steer: no run here has seeds
        out.pop(k, None)
    return out


def task_key(strategy: str, options: dict, path: str, seed: int, failures: bool) -> str:
    """The cache key of one run, on the candidate's settings resolved (see :func:`resolve`)."""
    return json.dumps(["v3", strategy, resolve(strategy, options), Path(path).name, seed, failures], sort_keys=True)


def task(args) -> tuple[str, list[float]]:
    strategy, options, path, budget, seed, failures = args
    run = run_once(runner(path, failures), strategy, budget, seed, options=resolve(strategy, options))
    return task_key(strategy, options, path, seed, failures), list(run.times)


def run_all(candidates: dict, files: list[str], repeats: int, seed: int, jobs: int, cache: Path,
            failures: bool = True) -> dict:
    """Every candidate on every file: {(name, path): [times of each run]}, replaying only what the cache lacks."""
    done = json.loads(cache.read_text()) if cache.exists() else {}
    budgets = {f: default_budget(runner(f).recorded.times) for f in files}
    todo, wanted = [], {}
    for name, (strategy, options) in candidates.items():
        for f in files:
            keys = []
            for s in range(seed, seed + repeats_for(budgets[f], repeats)):
                k = task_key(strategy, options, f, s, failures)
                keys.append(k)
                if k not in done:
                    todo.append((strategy, options, f, budgets[f], s, failures))
            wanted[(name, f)] = keys
    if todo:
        t0 = time.perf_counter()
        with multiprocessing.Pool(jobs) as pool:
            for i, (k, times) in enumerate(pool.imap_unordered(task, todo, chunksize=1)):
                done[k] = times
                if i % 50 == 49:
                    cache.write_text(json.dumps(done))
        cache.write_text(json.dumps(done))
        print(f"replayed {len(todo)} runs in {time.perf_counter() - t0:.0f} s on {jobs} processes", file=sys.stderr)
    return {key: [done[k] for k in keys] for key, keys in wanted.items()}


def reports(runs: dict, files: list[str], failures: bool = True) -> dict:
    """{(name, path): ReplayReport} from the cached runs."""
    out = {}
    for (name, f), rs in runs.items():
        times = runner(f, failures).recorded.times
        out[(name, f)] = summarize(f, name, default_budget(times), times, [ReplayRun(tuple(r), len(r), 0.0) for r in rs])
    return out


def score_error(path: str, runs: list[list[float]], resamples: int = 200, seed: int = 0) -> float:
    """Bootstrap standard error of a file's score: runs drawn again with replacement."""
    import numpy as np

    from tunesvc.replay.score import best_so_far, expected_random_best

    times = runner(path).recorded.times
    budget = default_budget(times)
    f_random = expected_random_best(times, budget)
    gap = f_random - times.min()
    keep = gap > 1e-12 * times.min()
    if not keep.any():
        return 0.0
    curves = np.array([best_so_far(r, budget) for r in runs])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(runs), (resamples, len(runs)))
    scores = [np.mean((f_random[keep] - curves[p].mean(axis=0)[keep]) / gap[keep]) for p in picks]
    return float(np.std(scores))


def group_mean(scores: dict[str, float], groups: dict[str, str], keep) -> float:
    """Mean over the kept groups of each group's mean score (each family weighs the same, however many files)."""
    by: dict[str, list[float]] = {}
    for f, s in scores.items():
        if keep(groups[f]):
            by.setdefault(groups[f], []).append(s)
    return statistics.mean(statistics.mean(v) for v in by.values())


def cross_validate(table: dict[str, dict[str, float]], groups: dict[str, str], eligible: list[str]) -> dict[str, tuple[str, float]]:
    """For each group: (the eligible candidate best on the other groups, its mean score on the group).
    Candidates that tie on the other groups (a setting that changes nothing there, e.g. one for short
    budgets when no other group has one) go to the first in ``eligible``'s order, and are printed."""
    out = {}
    for g in sorted(set(groups.values())):
        train = {c: group_mean(table[c], groups, lambda h: h != g) for c in eligible}
        chosen = max(eligible, key=train.__getitem__)
        tied = [c for c in eligible if c != chosen and train[c] == train[chosen]]
        if tied:
            print(f"  {g}: {chosen} ties with {', '.join(tied)} on the other groups; the first listed is taken")
        out[g] = (chosen, group_mean(table[chosen], groups, lambda h: h == g))
    return out


def print_errors(runs: dict, names: list[str], files: list[str]) -> None:
    """Each candidate's bootstrap standard error per file, to read the table by."""
    print("\nbootstrap standard error of each score:")
    for n in names:
        print(f"{n:16s} {'':8s} " + " ".join(f"{score_error(f, runs[(n, f)]):18.3f}" for f in files))


def print_table(reps: dict, names: list[str], files: list[str]) -> None:
    short = {f: Path(f).name.split(".")[0].replace("convolution", "conv").replace("dedispersion", "dedisp")[:18] for f in files}
    print(f"{'candidate':16s} {'fam.mean':>8s} " + " ".join(f"{short[f]:>18s}" for f in files))
    fams = {f: family(f) for f in files}
    for n in names:
        scores = {f: reps[(n, f)].score for f in files}
        cells = [f"{reps[(n, f)].score:6.3f} {reps[(n, f)].median_evals_to_5pct:4.0f}/{reps[(n, f)].expected_random_evals_to_5pct:<5.0f}"
                 for f in files]
        print(f"{n:16s} {group_mean(scores, fams, lambda g: True):8.3f} " + " ".join(f"{c:>18s}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", nargs="*", default=sorted(str(p) for p in (ROOT.parent / "shared" / "replay").glob("*.json*")))
    ap.add_argument("--repeats", type=int, default=5, help="runs per file of budget 1000 (more for smaller budgets)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/tunesvc-cv-cache.json"))
    ap.add_argument("--candidates", default="", help="comma-separated names of CANDIDATES (default: all)")
    ap.add_argument("--by", choices=("family", "device"), default="family")
    ap.add_argument("--errors", action="store_true", help="also print each score's bootstrap standard error")
    ap.add_argument("--no-failures", action="store_true", help="replay with the failed configs removed (Kernel Tuner's information)")
    args = ap.parse_args()
    names = [n for n in args.candidates.split(",") if n] or list(CANDIDATES)
    files = distinct(args.files)
    failures = not args.no_failures
    runs = run_all({n: CANDIDATES[n] for n in names}, files, args.repeats, args.seed, args.jobs, args.cache, failures)
    reps = reports(runs, files, failures)
    print_table(reps, names, files)
    if args.errors:
        print_errors(runs, names, files)
    table = {n: {f: reps[(n, f)].score for f in files} for n in names}
    groups = {f: (family(f) if args.by == "family" else Path(f).name) for f in files}
    fams = {f: family(f) for f in files}
    eligible = [n for n in names if CANDIDATES[n][0] != "random"]  # the strategy itself is a setting too
    cv = cross_validate(table, groups, eligible)
    print(f"\nleave-one-{args.by}-out:")
    for g, (chosen, score) in cv.items():
        print(f"  {g:40s} chosen on the others: {chosen:14s} left-out score {score:6.3f}")
    left_out = {f: table[cv[groups[f]][0]][f] for f in files}
    best = max(eligible, key=lambda c: group_mean(table[c], fams, lambda g: True))
    print(f"mean left-out score: {group_mean(left_out, fams, lambda g: True):.3f} over families "
          f"({statistics.mean(left_out.values()):.3f} over files)")
    print(f"in-sample: {best} chosen on every family scores {group_mean(table[best], fams, lambda g: True):.3f} over families")


if __name__ == "__main__":
    main()
