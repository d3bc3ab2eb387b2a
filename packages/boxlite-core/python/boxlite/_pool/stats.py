"""``PoolStats``: the counters a :class:`~boxlite.pool.BoxPool` reports (``pool.stats()``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolStats:
    """Counters of a :class:`BoxPool` at one moment."""

    #: Booted boxes waiting for a lease.
    idle: int
    #: Boxes leased now.
    leased: int
    #: Boxes booting (or being prepared) now.
    starting: int
    #: Boxes booted and prepared since the pool was made.
    created: int
    #: Boxes stopped since the pool was made (retired, broken or closed).
    destroyed: int
    #: Boxes destroyed because they broke: marked broken, an exception in a lease, a failed
    #: health check, or a failed ``prepare``.
    broken: int
    #: Callers waiting for a box now.
    waiting: int
    #: Leases handed out since the pool was made.
    leases: int


__all__ = ["PoolStats"]
