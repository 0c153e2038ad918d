"""``tunesvc replay``: run a search strategy on recorded tuning spaces and score it."""

from __future__ import annotations

import click

from .common import check_count, emit_document, json_option, library_errors, table

#: runs of one file: each is a whole search, and seeds must stay below 2**32
MAX_REPEATS = 1000


def _transfer_seeds(device, sources: tuple[str, ...]) -> list:
    """Seeds for ``device`` from the results recorded in other files (e.g. another GPU)."""
    from ..replay.runner import to_records
    from ..replay.files import load
    from ..search.transfer import seed_configs

    records = [r for path in sources for r in to_records(load(path))]
    return seed_configs(records, device.info.fingerprint, device.recorded.problem_size, device.space)


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--strategy", default=None, help="Search strategy (default: the measured default of 'tunesvc tune').")
@click.option("--strategy-option", "strategy_option", multiple=True, metavar="KEY=VALUE",
              help="A setting of the strategy, VALUE as JSON (e.g. polish=0.2); repeatable. 'tunesvc strategies' lists them.")
@click.option("--budget", type=int, default=None,
              help="Feasible evaluations per run (default: 4x random search's expected evaluations to within 5% of the optimum, at most 1000).")
@click.option("--repeats", type=int, default=10, show_default=True, help=f"Runs per file (at most {MAX_REPEATS}), with seeds SEED, SEED+1, ...")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first run (0 to 2**32 - REPEATS).")
@click.option("--transfer", "transfer_from", multiple=True,
              help="Recorded file of a related problem (another GPU, same kernel): try its best configs first. Repeatable.")
@json_option
@library_errors
def replay(files, strategy, strategy_option, budget, repeats, seed, transfer_from, as_json):
    """Replay a strategy on recorded tuning spaces (Kernel Tuner cache files or T4 files, .json or .json.gz)."""
    from .. import search
    from ..replay.files import MAX_CONFIGS
    from ..replay.runner import RecordedRunner
    from ..replay.score import replay as run_replay

    check_count(budget, "--budget", 1, MAX_CONFIGS)
    check_count(repeats, "--repeats", 1, MAX_REPEATS)
    check_count(seed, "--seed", 0, 2**32 - repeats)

    strategy = strategy or search.DEFAULT_STRATEGY
    options = search.parse_options(strategy, strategy_option)
    reports = []
    for path in files:
        device = RecordedRunner(path)
        seeds = _transfer_seeds(device, transfer_from) if transfer_from else ()
        reports.append(run_replay(device, strategy, budget, repeats, seed, seeds, options))
    if as_json:
        emit_document(reports=[_report_document(r) for r in reports])
        return
    rows = [{"file": r.file, "strategy": r.strategy, "valid": r.n_valid, "budget": r.budget,
             "evals_to_5%": f"{r.median_evals_to_5pct:g}", "random": f"{r.expected_random_evals_to_5pct:.1f}",
             "reached": f"{r.fraction_reached:.0%}", "best/opt": f"{r.best_over_optimum:.3f}", "score": f"{r.score:.3f}"}
            for r in reports]
    click.echo(table(rows, list(rows[0])))
    if len(reports) > 1:
        click.echo(f"mean score {sum(r.score for r in reports) / len(reports):.3f} over {len(reports)} files, {repeats} runs each")


def _report_document(report) -> dict:
    """A replay report in replay --json: its figures, the recorded times in seconds under ``*_s`` names."""
    d = report.to_dict()
    d["optimum_s"], d["run_times_s"] = d.pop("optimum"), d.pop("runs")
    return d
