"""What the tool core needs of a pool, so that a local :class:`~boxlite.pool.BoxPool` and a
cluster's :class:`~boxlite.ray.RayBoxPool` are interchangeable wherever tools take ``pool=``."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class PoolLease(Protocol):
    """One box on loan from a pool (:class:`~boxlite.pool.Lease`, :class:`~boxlite.ray.RayLease`)."""

    @property
    def box(self) -> Any:
        """The leased box: a :class:`~boxlite.Box`, or a :class:`~boxlite.ray.RemoteBox` that
        offers the same calls on its node."""

    @property
    def resource(self) -> Any:
        """What the pool's ``prepare`` hook made for this box (``None`` without one)."""

    def mark_broken(self) -> None:
        """The box must not be leased again: it is destroyed on release."""


class LeasingPool(Protocol):
    """A pool that lends boxes: ``async with pool.lease() as lease``, ``start()``, ``close()``."""

    def lease(self) -> AbstractAsyncContextManager[PoolLease]:
        """A box for the ``async with`` block; an exception escaping it marks the box broken."""

    async def start(self) -> None:
        """Boots the boxes the pool keeps ready."""

    async def close(self) -> None:
        """Stops every box of the pool."""
