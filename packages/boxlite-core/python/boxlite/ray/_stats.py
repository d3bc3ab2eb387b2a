"""``RayPoolStats``: a :class:`~boxlite.ray.RayBoxPool`'s counters, per node and in total."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..pool import PoolStats

#: A node that did not answer (lost, or not started yet) counts as all zeros.
EMPTY = PoolStats(idle=0, leased=0, starting=0, created=0, destroyed=0, broken=0, waiting=0, leases=0)


def add(stats: Iterable[PoolStats]) -> PoolStats:
    """The field-by-field sum of ``stats``."""
    names = [f.name for f in dataclasses.fields(PoolStats)]
    totals = dict.fromkeys(names, 0)
    for one in stats:
        for name in names:
            totals[name] += getattr(one, name)
    return PoolStats(**totals)


@dataclass(frozen=True)
class RayPoolStats:
    """Counters of a :class:`~boxlite.ray.RayBoxPool` at one moment.

    ``total`` and each entry of ``nodes`` are :class:`~boxlite.pool.PoolStats`, as
    ``BoxPool.stats()`` returns them: ``idle``, ``leased``, ``starting`` (booting), ``broken``
    (failed boxes) and the rest. ``lost_nodes`` are the nodes whose actor died; their boxes went
    with them and count nowhere else.
    """

    total: PoolStats
    #: Per Ray node id (hex), the counters of its local pool.
    nodes: Mapping[str, PoolStats]
    #: Ray node ids whose actor died (a removed node, a crashed actor).
    lost_nodes: tuple[str, ...] = ()

    @property
    def idle(self) -> int:
        return self.total.idle

    @property
    def leased(self) -> int:
        return self.total.leased

    @property
    def starting(self) -> int:
        return self.total.starting

    @property
    def broken(self) -> int:
        return self.total.broken


__all__ = ["RayPoolStats"]
