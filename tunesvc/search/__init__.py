"""Search strategies by name. Optuna is imported only when a strategy that needs it is made."""

from __future__ import annotations

import importlib

from ..errors import UsageError
from .base import Strategy  # noqa: F401
from .space import Dimension, SearchSpace  # noqa: F401

STRATEGIES = {
    "tpe": "tunesvc.search.optuna_tpe:TPEStrategy",
    "random": "tunesvc.search.simple:RandomStrategy",
    "grid": "tunesvc.search.simple:GridStrategy",
    "local": "tunesvc.search.local:LocalStrategy",
    "density": "tunesvc.search.density:DensityStrategy",
    "ensemble": "tunesvc.search.ensemble:EnsembleStrategy",
    "swarm": "tunesvc.search.swarm:SwarmStrategy",
    "bo": "tunesvc.search.gp:BayesStrategy",
}
# Chosen by measurement on the recorded spaces of ../shared/replay (benchmarks/search.py, docs/benchmarks.md).
DEFAULT_STRATEGY = "ensemble"


def check_name(name: str) -> str:
    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    return name


def make(name: str, space: SearchSpace, seed: int | None = None, **options) -> Strategy:
    """A strategy by name. ``options`` (e.g. ``storage``, ``study_name`` for Optuna-backed ones)
    are passed to strategies that take them and ignored by the others."""
    check_name(name)
    module, cls = STRATEGIES[name].split(":")
    return getattr(importlib.import_module(module), cls)(space, seed, **options)
