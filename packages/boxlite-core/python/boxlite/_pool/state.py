"""What every part of a :class:`~boxlite.pool.BoxPool` reads and writes, declared once.

``_PoolState`` is the base of the pool's classes (``filling.py``, ``leasing.py``, ``sync.py``,
``box_pool.py``): it declares the settings that ``BoxPool``'s constructor checks and sets, and
the state that lives on the library's event loop; it holds the small helpers every part uses
on that loop (the condition waiters wait on, background tasks) and :meth:`stats`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from ..options import BoxOptions
from ..runtime import Box, Boxlite
from .lease import _PooledBox
from .stats import PoolStats


class _PoolState:
    """The settings and the state of a pool (set by ``BoxPool.__init__``)."""

    # -- settings (checked and set by BoxPool.__init__) ----------------------------------------

    _options: BoxOptions
    _runtime: Boxlite | None
    min_idle: int
    max_size: int
    max_uses: int
    max_lifetime: float | None
    acquire_timeout: float
    exhaustion: Literal["wait", "fail"]
    _prepare: Callable[[Box], Awaitable[Any]] | None
    _health_check: Callable[[Box], Awaitable[bool]]
    # Refilling from a snapshot (snapshotting.py).
    _from_snapshot: bool
    _before_snapshot: Callable[[Box], Awaitable[Any]] | None

    # -- state: touched only on the library loop (sync_api.loop()) ----------------------------

    _idle: deque[_PooledBox]
    _leased: set[_PooledBox]
    _starting: int
    _stopping: int
    _waiting: int
    _created: int
    _destroyed: int
    _broken: int
    _leases: int
    _closed: bool
    _tasks: set[asyncio.Task[Any]]
    _changed: asyncio.Condition | None
    # Creation failures, so waiting acquirers raise them instead of waiting out the timeout.
    _create_failures: int
    _last_create_error: BaseException | None
    # After a creation failure, background top-ups pause until then (no boot loop on a bad
    # image or a failing prepare); acquirers still start boxes on demand.
    _retry_after: float
    # The pool's snapshot once taken (from_snapshot=True), and the lock of taking it.
    _snapshot: str | None
    _snapshot_lock: asyncio.Lock | None

    def stats(self) -> PoolStats:
        """The pool's counters now."""
        return PoolStats(
            idle=len(self._idle),
            leased=len(self._leased),
            starting=self._starting,
            created=self._created,
            destroyed=self._destroyed,
            broken=self._broken,
            waiting=self._waiting,
            leases=self._leases,
        )

    # -- on the library loop --------------------------------------------------------------------

    @property
    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def _total(self) -> int:
        return len(self._idle) + len(self._leased) + self._starting + self._stopping

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # logged where it happened; retrieved so asyncio does not log it again

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()
