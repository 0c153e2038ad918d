"""Search strategies by name. Optuna is imported only when a strategy that needs it is made."""

from __future__ import annotations

import importlib
import inspect
import json

from ..errors import UsageError
from .base import Strategy  # noqa: F401
from .ranges import RANGES, _plain, check  # noqa: F401
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


#: constructor arguments that are not search settings (the study layer's, or internal)
_NOT_SETTINGS = {"self", "space", "seed", "options", "storage", "study_name"}


def settings(name: str) -> dict:
    """The settings strategy ``name`` takes, with their defaults: what ``--strategy-option`` may set."""
    module, cls = STRATEGIES[check_name(name)].split(":")
    sig = inspect.signature(getattr(importlib.import_module(module), cls).__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k not in _NOT_SETTINGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def parse_options(name: str, pairs) -> dict:
    """Strategy settings from ``KEY=VALUE`` strings (VALUE as JSON where it parses, else a string),
    checked against the strategy's settings and the kinds of their defaults; UsageError naming the
    setting otherwise. ``pairs`` may also be a dict of values already typed (the Python API)."""
    known = settings(name)
    items = pairs.items() if isinstance(pairs, dict) else [_split(p) for p in pairs]
    out = {}
    for key, value in items:
        if key not in known:
            raise UsageError(f"strategy {name!r} has no setting {key!r}; its settings: {', '.join(sorted(known)) or 'none'}")
        out[key] = _typed(name, key, value, known[key])
    check(name, **out)
    if out:  # the strategy's own checks too, now, before anything is opened or measured
        from ..types import Config

        tiny = SearchSpace((Dimension("x", (0, 1, 2)),), [Config(x=0), Config(x=1), Config(x=2)])
        try:
            make(name, tiny, 0, **out)
        except UsageError:
            raise
        except Exception as e:  # a combination no range above catches: refused, not a traceback
            raise UsageError(f"strategy {name!r} refuses the settings {json.dumps(_plain(out))}: {e}") from None
    return out


def _split(pair: str) -> tuple[str, object]:
    key, eq, text = str(pair).partition("=")
    if not eq or not key.strip():
        raise UsageError(f"--strategy-option takes KEY=VALUE (e.g. patience=30); got {pair!r}")
    try:
        return key.strip(), json.loads(text)
    except ValueError:
        return key.strip(), text


def _typed(name: str, key: str, value, default):
    """``value`` checked against the kind of ``default``: a whole number where a number is wanted,
    a JSON list where a tuple is."""
    if default is None or default is inspect.Parameter.empty:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            isinstance(default, float) or isinstance(value, int))
        value = type(default)(value) if ok else value
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (list, tuple))
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UsageError(f"strategy {name!r} setting {key!r} takes a {_kind(default)} "
                         f"(default {json.dumps(default)}); got {json.dumps(value)}")
    return value


def _kind(default) -> str:
    return {bool: "true or false", int: "whole number", float: "number", str: "string",
            tuple: "JSON list", list: "JSON list", dict: "JSON object"}.get(type(default), type(default).__name__)
