"""Transfer: start a search from the best configs known for related problems.

A good config for one shape is usually good for a nearby shape, and a good
config on one GPU is often good on its sibling. Seeds are taken from stored
records of the same template, ranked by how closely the problem is related:
the same device family first, then the same vendor, then any device; within
a level, the nearest shape in log space. The best configs of each related
problem are interleaved (closest problem first) so a few seeds cover several
neighbours. Seeds are only a starting point: the strategy measures them like
any proposal, and only configs in the current space are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from ..types import Config, Fingerprint, Record
from .space import SearchSpace

#: seeds tried before the strategy's own proposals
DEFAULT_SEEDS = 5
#: configs taken from each related problem at most
PER_PROBLEM = 3


@dataclass(frozen=True)
class Problem:
    """Where known results come from: a device and a shape."""

    fingerprint: Fingerprint
    shape: tuple[int, ...]


def device_level(target: Fingerprint, other: Fingerprint) -> int:
    """0: same device family (any driver), 1: same vendor, 2: anything else."""
    if other.family == target.family:
        return 0
    if other.vendor and other.vendor == target.vendor:
        return 1
    return 2


def shape_distance(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    if len(a) != len(b) or not a:
        return math.inf if a != b else 0.0
    return math.sqrt(sum((math.log(max(x, 1)) - math.log(max(y, 1))) ** 2 for x, y in zip(a, b)))


def seed_configs(records: Iterable[Record], target: Problem, space: SearchSpace, limit: int = DEFAULT_SEEDS) -> list[Config]:
    """Up to ``limit`` configs of ``space``, best of the most related problems first.

    Records of the target problem itself are skipped: those are measurements the
    search is told about directly, not guesses to try.
    """
    best: dict[Problem, list[tuple[float, Config]]] = {}
    for r in records:
        m = r.measurement
        problem = Problem(r.fingerprint, tuple(r.shape))
        if not m.ok or m.config not in space or (r.fingerprint.key == target.fingerprint.key and problem.shape == target.shape):
            continue
        best.setdefault(problem, []).append((m.time, m.config))
    ranked = sorted(best, key=lambda p: (device_level(target.fingerprint, p.fingerprint), shape_distance(p.shape, target.shape), p.fingerprint.key))
    lists = [[c for _, c in sorted(best[p], key=lambda tc: tc[0])[:PER_PROBLEM]] for p in ranked]
    seeds: list[Config] = []
    for rank in range(PER_PROBLEM):
        for configs in lists:
            if rank < len(configs) and configs[rank] not in seeds:
                seeds.append(configs[rank])
            if len(seeds) >= limit:
                return seeds
    return seeds


def seeds_from_store(store, template: str, template_hash: str, dtype: str, target: Problem, space: SearchSpace,
                     limit: int = DEFAULT_SEEDS) -> list[Config]:
    """Seeds from a :class:`~tunesvc.cache.Store`: ok records of the same template source and dtype."""
    records = (r for r in store.records(template=template, status="ok")
               if r.template_hash == template_hash and r.dtype == dtype)
    return seed_configs(records, target, space, limit)
