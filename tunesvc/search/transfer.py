"""Transfer: start a search from the best configs known for related problems.

A good config for one shape is usually good for a nearby shape, and a good
config on one GPU is often good on its sibling. Seeds are taken from stored
records of the same template, ranked by how closely the problem is related
(:func:`tunesvc.identity.relation`): the same hardware first (any driver), then
the same vendor and device type, then any device; within a level, the nearest
shape in log space. The best configs of each related
problem are interleaved (closest problem first) so a few seeds cover several
neighbours. Records of earlier versions of the template (another source hash) are seeds too, projected
the same way, a parameter added since taking its default. Seeds are only a starting point: the strategy measures them like
any proposal, and only configs in the current space are used (a seed from a space with more
or fewer parameters is projected onto this one's, :meth:`SearchSpace.project`). Where the
strategy weighs seeds against its own techniques (the default ensemble), a bad seed costs an
evaluation or two, not a detour.
"""

from __future__ import annotations

from typing import Iterable

from ..identity import relation
from ..types import Config, Fingerprint, Problem, Record, shape_distance
from .space import SearchSpace

#: seeds tried before the strategy's own proposals
DEFAULT_SEEDS = 5
#: configs taken from each related problem at most
PER_PROBLEM = 3
#: seed rank of each device relation: the device's own records at other shapes rank with the same
#: hardware's under another driver, then the vendor's other devices, then any device
_RANK = {"exact": 0, "family": 0, "vendor": 1, "other": 2}


def seed_configs(records: Iterable[Record], device: Fingerprint, shape: tuple[int, ...], space: SearchSpace,
                 limit: int = DEFAULT_SEEDS, template_hash: str | None = None, defaults=None) -> list[Config]:
    """Up to ``limit`` configs of ``space``, best of the problems most related to ``shape`` on ``device`` first.

    Records of the target problem itself are skipped: those are measurements the
    search is told about directly, not guesses to try. Where ``template_hash`` is
    given, records of other versions of the template are seeds too, the target
    problem's own among them (its winner under the last version is the best guess
    there is after a template change); within a relation and a shape distance, the
    current version's come first. A parameter an older version lacked takes its
    value from ``defaults`` (what that version ran).
    """
    shape = tuple(shape)
    best: dict[tuple[Fingerprint, tuple, bool], dict[Config, float]] = {}  # (device, shape, older) -> config -> fastest time
    for r in records:
        m = r.measurement
        older = template_hash is not None and r.template_hash != template_hash
        where = (r.fingerprint, tuple(r.shape), older)
        if not m.ok or (not older and r.fingerprint.key == device.key and where[1] == shape):
            continue
        config = m.config if m.config in space else space.project(m.config, defaults)
        if config is not None:  # several configs of a larger space can project onto one: keep its fastest
            times = best.setdefault(where, {})
            times[config] = min(m.time, times.get(config, m.time))
    ranked = sorted(best, key=lambda p: (_RANK[relation(device, p[0])], shape_distance(p[1], shape), p[2], p[0].key))
    lists = [sorted(best[p], key=best[p].__getitem__)[:PER_PROBLEM] for p in ranked]
    seeds: list[Config] = []
    for rank in range(PER_PROBLEM):
        for configs in lists:
            if rank < len(configs) and configs[rank] not in seeds:
                seeds.append(configs[rank])
            if len(seeds) >= limit:
                return seeds
    return seeds


def seeds_from_store(store, problem: Problem, space: SearchSpace, limit: int = DEFAULT_SEEDS, defaults=None) -> list[Config]:
    """Seeds for ``problem`` from a :class:`~tunesvc.cache.Store`: its ok records of the same template
    and dtype, on any device, at any shape and of any version of the template's source."""
    records = (r for r in store.records(template=problem.template, status="ok") if r.dtype == problem.dtype)
    return seed_configs(records, problem.device, problem.shape, space, limit, problem.template_hash, defaults)
