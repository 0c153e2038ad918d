"""Search strategies by name. Optuna is imported only when a strategy that needs it is made."""

from __future__ import annotations

import importlib
import inspect
import json

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
    for key, value in out.items():
        check, wanted = RANGES.get(key, (None, ""))
        if check is not None and not check(value):
            raise UsageError(f"strategy {name!r} setting {key!r} must be {wanted}; got {json.dumps(_plain(value))}")
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


def _plain(value):
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, dict) else (
        list(value) if isinstance(value, tuple) else value)


#: the ensemble's arms (tunesvc.search.ensemble.ARMS, repeated here so checking needs no import of it)
_ARMS = ("density", "local", "swarm", "random", "hop", "gp")


def _at_least(lo):
    return lambda v: v >= lo


def _within(lo, hi, open_lo=False, open_hi=False):
    return lambda v: (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)


def _one_of(*choices):
    return (lambda v: v in choices), "one of " + ", ".join(json.dumps(c) for c in choices)


#: what each setting may be, whichever strategy takes it (same name, same meaning)
RANGES: dict[str, tuple] = {
    "start": (_at_least(1), "a whole number >= 1"),
    "spread": (_at_least(1), "a whole number >= 1"),
    "particles": (_within(1, 10_000), "a whole number in [1, 10000]"),
    **{k: (_at_least(0), "a whole number >= 0") for k in ("patience", "burst", "lead", "far_pool", "short_budget", "seed_picks")},
    **{k: (_at_least(0), "a number >= 0") for k in ("patience_fraction", "inertia", "cognitive", "social", "xi")},
    **{k: (_within(0, 1, open_lo=True), "a number in (0, 1]") for k in ("discount", "clip", "gamma")},
    **{k: (_within(0, 1), "a number in [0, 1]") for k in ("start_fraction", "patience_budget", "explore")},
    "top": (_within(0, 1, True, True), "a number in (0, 1)"),
    "polish": (_within(0, 1, open_hi=True), "a number in [0, 1)"),
    **{k: (lambda v: v > 0, "a number > 0") for k in ("lengthscale", "bandwidth")},
    "scatter": _one_of("forget", "keep", "none"),
    "design": _one_of("random", "far"),
    "respread": _one_of("random", "far"),
    "failure_credit": _one_of("loss", "none"),
    "ring": _one_of("steps", "changed", "few"),
    "arms": (lambda v: bool(v) and all(a in _ARMS for a in v) and len(set(v)) == len(v),
             "a JSON list of distinct arms among " + ", ".join(_ARMS)),
    "prior": (lambda v: all(k in (*_ARMS, "transfer") and isinstance(n, (int, float)) and not isinstance(n, bool)
                            and n >= 0 for k, n in v.items()),
              "a JSON object of arms (" + ", ".join((*_ARMS, "transfer")) + ") to pseudo-wins >= 0"),
}


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
