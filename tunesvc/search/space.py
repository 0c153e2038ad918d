"""A search space: the valid configs of one tuning problem, and a numeric encoding of them.

Strategies see only valid configs. Each parameter is encoded by the index of
its value in the parameter's ordered value list, so "nearby" means "one step
up or down" whatever the values are (tile sizes, flags, vector widths).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..types import Config


@dataclass(frozen=True)
class Dimension:
    name: str
    values: tuple


class SearchSpace:
    def __init__(self, dims: Sequence[Dimension], configs: Sequence[Config], default: Config | None = None):
        self.dims = tuple(dims)
        self.names = tuple(d.name for d in self.dims)
        self.configs = tuple(configs)
        self.index = {c: i for i, c in enumerate(self.configs)}
        self.default = default if default in self.index else None
        lookup = [{v: i for i, v in enumerate(d.values)} for d in self.dims]
        #: configs x dims matrix of value indices
        self.codes = np.array(
            [[lookup[j][c[d.name]] for j, d in enumerate(self.dims)] for c in self.configs], dtype=np.int32
        ).reshape(len(self.configs), len(self.dims))
        self.sizes = np.array([max(1, len(d.values) - 1) for d in self.dims], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.configs)

    def __contains__(self, config: Config) -> bool:
        return config in self.index

    @classmethod
    def from_template(cls, template, ctx) -> "SearchSpace":
        dims = [Dimension(p.name, tuple(p.values)) for p in template.params]
        configs = template.valid_configs(ctx)
        default = template.default_config()
        return cls(dims, configs, default)

    def project(self, config, defaults=None) -> Config | None:
        """``config`` as a config of this space, or None: its values of this space's parameters
        (extra ones dropped; a missing one filled in where the parameter has one value, or from
        ``defaults``), if that is a valid config here. For seeds from a related space (another
        device's recording of the same kernel with more or fewer parameters; an earlier version
        of a template, before a parameter was added: its default is what that version ran)."""
        values = {}
        for d in self.dims:
            if d.name in config:
                values[d.name] = config[d.name]
            elif len(d.values) == 1:
                values[d.name] = d.values[0]
            elif defaults is not None and d.name in defaults:
                values[d.name] = defaults[d.name]
            else:
                return None
        c = Config(values)
        return c if c in self.index else None

    def encode(self, config: Config) -> np.ndarray:
        return self.codes[self.index[config]]

    def decode(self, codes) -> Config:
        """The config for a mapping of parameter name to value index (Optuna's params)."""
        return Config({d.name: d.values[int(codes[d.name])] for d in self.dims})

    def unit(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Codes scaled to [0, 1] per dimension."""
        codes = self.codes if rows is None else self.codes[rows]
        return codes / self.sizes

    def nearest(self, point: Sequence[float], mask: np.ndarray | None = None) -> int:
        """Index of the config nearest to ``point`` (in value-index units, L1 over unit-scaled
        dimensions) among those where ``mask`` is true; ties go to the lower index."""
        d = np.abs(self.codes - np.asarray(point, dtype=np.float64)) / self.sizes
        dist = d.sum(axis=1)
        if mask is not None:
            dist = np.where(mask, dist, np.inf)
        return int(np.argmin(dist))
