"""Pictures of the search and of its results (matplotlib, the plot extra), as PNG or SVG.

* :func:`convergence`: best time so far against trials and against wall time, with random
  search's exact expectation where the whole space has been measured;
* :func:`roofline`: each tuned problem of a device as a point under its measured ceilings;
* :func:`compare`: one problem's best GFLOP/s across devices and drivers, with the configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

from ..errors import UsageError, require

FORMATS = (".png", ".svg")


def _pyplot():
    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def check_output(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise UsageError(f"-o {str(p)!r}: the file name must end in {' or '.join(FORMATS)}")
    if not p.parent.is_dir():
        raise UsageError(f"-o {str(p)!r}: folder {str(p.parent)!r} does not exist")
    return p


def _save(fig, path: Path) -> Path:
    import matplotlib
    import matplotlib.pyplot as plt

    fig.tight_layout()
    # SVG text stays text (searchable, selectable); no date in the file, so the same data draws the same bytes
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "tunesvc"}):
        svg = path.suffix.lower() == ".svg"
        fig.savefig(path, format=path.suffix.lower()[1:], dpi=120, metadata={"Date": None} if svg else None)
    plt.close(fig)
    return path


# ---- convergence --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    """One measurement of a problem, in the order it was made."""

    time: float | None  # seconds; None for a failed config
    created_at: str  # ISO time it was stored


def best_so_far(trials: Sequence[Trial]) -> list[float | None]:
    best, out = None, []
    for t in trials:
        if t.time is not None and (best is None or t.time < best):
            best = t.time
        out.append(best)
    return out


def convergence_series(trials: Sequence[Trial]) -> tuple[list[int], list[float | None], list[float], list[float | None]]:
    """(trial numbers, best so far by trial, seconds since the first measurement, best so far by
    time). By time the trials are in the order they were stamped: a leader measured again at the
    end of a run is stamped last, after configs the search tried after it."""
    stamped = sorted(trials, key=lambda t: datetime.fromisoformat(t.created_at))
    start = datetime.fromisoformat(stamped[0].created_at)
    seconds = [(datetime.fromisoformat(t.created_at) - start).total_seconds() for t in stamped]
    return list(range(1, len(trials) + 1)), best_so_far(trials), seconds, best_so_far(stamped)


def convergence(trials: Sequence[Trial], path: str | Path, title: str, space_size: int | None = None) -> Path:
    """Best time so far against trials and wall time; random search's expectation when every
    config of a space of ``space_size`` has a measurement (then the draw is exactly known)."""
    from ..replay.score import expected_random_best

    plt = _pyplot()
    path = check_output(path)
    if not trials:
        raise UsageError(f"{title}: no measurements to plot; tune the problem first")
    index, by_index, seconds, by_seconds = convergence_series(trials)
    fig, (by_trial, by_time) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, x, best in ((by_trial, index, by_index), (by_time, seconds, by_seconds)):
        ax.step(x, [b if b is not None else float("nan") for b in best], where="post", label="best so far")
        ax.set_xlabel("trials" if ax is by_trial else "wall time since the first measurement (s)")
        ax.set_ylabel("best kernel time (s)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    ok = [t.time for t in trials if t.time is not None]
    if space_size and len(trials) >= space_size and ok:
        import numpy as np

        expected = expected_random_best(np.array(ok), len(ok))
        by_trial.plot(range(1, len(ok) + 1), expected, linestyle="--", label="random search (expected)")
    by_trial.legend()
    fig.suptitle(title)
    return _save(fig, path)


# ---- roofline -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """A tuned problem: its arithmetic intensity (FLOP per byte moved) and its best GFLOP/s."""

    label: str
    intensity: float
    gflops: float


def roofline(points: Sequence[Point], ceilings, path: str | Path, title: str) -> Path:
    """Points under the device's measured ceilings (copy and read bandwidth, FMA, physical peak)."""
    import numpy as np

    plt = _pyplot()
    path = check_output(path)
    if not points:
        raise UsageError(f"{title}: no tuned problem to plot")
    lo = min(min(p.intensity for p in points) / 4, 1 / 16)
    hi = max(max(p.intensity for p in points) * 4, 2 * ceilings.gflops / ceilings.gbps)
    x = np.geomspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(x, np.minimum(x * ceilings.gbps, ceilings.gflops), label=f"copy {ceilings.gbps:.1f} GB/s, FMA {ceilings.gflops:.1f} GFLOP/s")
    if ceilings.read_gbps:
        ax.plot(x, np.minimum(x * ceilings.read_gbps, ceilings.gflops), linestyle=":", label=f"read {ceilings.read_gbps:.1f} GB/s")
    if ceilings.peak_gflops:
        ax.axhline(ceilings.peak_gflops, linestyle="--", color="gray", label=f"physical peak {ceilings.peak_gflops:.1f} GFLOP/s")
    for p in points:
        ax.scatter([p.intensity], [p.gflops], zorder=3)
        ax.annotate(p.label, (p.intensity, p.gflops), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("GFLOP/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


# ---- compare ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bar:
    """One device's (and driver's) best for a problem."""

    device: str
    gflops: float
    config: str


def compare(bars: Sequence[Bar], path: str | Path, title: str) -> Path:
    plt = _pyplot()
    path = check_output(path)
    if not bars:
        raise UsageError(f"{title}: no device has an ok record of this problem")
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(bars)))
    ys = list(range(len(bars)))
    ax.barh(ys, [b.gflops for b in bars])
    ax.set_yticks(ys, [b.device for b in bars], fontsize=8)
    for y, b in zip(ys, bars):
        ax.annotate(f"{b.gflops:.1f}  {b.config}", (b.gflops, y), fontsize=7, xytext=(3, -3), textcoords="offset points")
    ax.set_xlabel("GFLOP/s (best config)")
    ax.invert_yaxis()
    ax.set_title(title)
    return _save(fig, path)
