"""What each strategy setting may be: one table, read by ``--strategy-option`` parsing and by the
strategies' own constructors, so that a value out of range gets the same one line either way."""

from __future__ import annotations

import json

from ..errors import UsageError

#: the ensemble's arms (techniques it weighs against each other)
ARMS = ("density", "local", "swarm", "random", "hop", "gp")
#: how far the ensemble's transfer seeds steer (tunesvc.search.ensemble explains each)
TRANSFER = ("first", "arm", "soft", "probe", "near")


def _at_least(lo):
    return lambda v: v >= lo


def _within(lo, hi, open_lo=False, open_hi=False):
    return lambda v: (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)


def _one_of(*choices):
    return (lambda v: v in choices), "one of " + ", ".join(json.dumps(c) for c in choices)


def _arms_ok(v) -> bool:
    return bool(v) and all(a in ARMS for a in v) and len(set(v)) == len(v)


def _prior_ok(v) -> bool:
    return isinstance(v, dict) and all(
        k in (*ARMS, "transfer") and isinstance(n, (int, float)) and not isinstance(n, bool) and n >= 0
        for k, n in v.items())


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
    "transfer": _one_of(*TRANSFER),
    "arms": (_arms_ok, "a JSON list of distinct arms among " + ", ".join(ARMS)),
    "prior": (_prior_ok, "a JSON object of arms (" + ", ".join((*ARMS, "transfer")) + ") to pseudo-wins >= 0"),
}


def check(strategy: str, **values) -> None:
    """UsageError, one line naming the setting, for the first value outside its range."""
    for key, value in values.items():
        ok, wanted = RANGES.get(key, (None, ""))
        if ok is None:
            continue
        try:
            fine = ok(value)
        except TypeError:  # a value of another kind altogether (a string where a number goes)
            fine = False
        if not fine:
            raise UsageError(f"strategy {strategy!r} setting {key!r} must be {wanted}; got {json.dumps(_plain(value))}")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value
