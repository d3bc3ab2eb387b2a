"""What a pool holds per box (``_PooledBox``: the box, its ``prepare`` resource, age, uses,
broken) and the :class:`Lease` a caller gets for one while it uses it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..runtime import Box

if TYPE_CHECKING:
    from .box_pool import BoxPool


@dataclass(eq=False)
class _PooledBox:
    box: Box
    resource: Any
    born: float
    uses: int = 0
    broken: bool = False
    destroyed: bool = False
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)


class Lease:
    """A box leased from a :class:`BoxPool`, until it is released."""

    def __init__(self, pool: BoxPool, pooled: _PooledBox) -> None:
        self._pool = pool
        self._pooled = pooled
        self._released = False

    @property
    def box(self) -> Box:
        """The leased box."""
        return self._pooled.box

    @property
    def resource(self) -> Any:
        """What the pool's ``prepare`` returned for this box (``None`` without ``prepare``)."""
        return self._pooled.resource

    @property
    def uses(self) -> int:
        """How many leases this box has had, this one included."""
        return self._pooled.uses

    @property
    def broken(self) -> bool:
        return self._pooled.broken

    def mark_broken(self) -> None:
        """The box must not be reused (a command timed out, its state is unknown): it is
        destroyed on release instead of going back to the pool."""
        self._pooled.broken = True

    def __repr__(self) -> str:
        return f"<boxlite.pool.Lease box={self.box.id} uses={self.uses} broken={self.broken}>"


__all__ = ["Lease"]
