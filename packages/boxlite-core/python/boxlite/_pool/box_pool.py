"""``BoxPool``: its constructor (the checked settings, the empty state) and its public async
API. The rest of the class is in its bases, one concern each: ``state.py`` (what every part
reads and writes, ``stats()``), ``filling.py`` (booting, preparing, retiring boxes),
``leasing.py`` (acquire, release and close on the library loop) and ``sync.py`` (the blocking
twins)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from .. import sync_api
from ..errors import InvalidOptionError
from ..options import BoxOptions
from ..runtime import Box, Boxlite
from .health import default_health_check
from .lease import Lease
from .settings import checked_pool_settings
from .sync import _SyncPool


class BoxPool(_SyncPool):
    """A pool of pre-warmed boxes (see the module docs).

    Args:
        options: The boxes' options. Default: ``BoxOptions(image=default_image())``
            (``BOXLITE_DEFAULT_IMAGE`` or ``python:slim``). ``name`` must be unset.
        runtime: The runtime the boxes live in. Default: :meth:`Boxlite.default`.
        min_idle: Boxes kept booted and ready for a lease.
        max_size: Most boxes at once: idle, leased, booting and stopping together.
        max_uses: Leases a box serves before it is destroyed. 1 (default): a fresh box for
            every lease, so no state leaks between tenants.
        max_lifetime: Seconds after which a box is retired (when idle, or on release).
        acquire_timeout: Seconds :meth:`acquire` waits for a box before raising
            :class:`~boxlite.errors.PoolExhaustedError`.
        exhaustion: When all ``max_size`` boxes are leased: ``"wait"`` for one (up to
            ``acquire_timeout``) or ``"fail"`` at once with ``PoolExhaustedError``.
        prepare: Awaited once on every new box before it becomes idle (e.g. to start a warm
            interpreter); its result is :attr:`Lease.resource`. If it raises, the box is destroyed.
        health_check: Awaited before every lease; a box for which it returns ``False`` (or
            raises) is destroyed and another one is tried. Default: :func:`default_health_check`.
        from_snapshot: Create the boxes by restoring a snapshot instead of booting them
            (several times faster). The pool boots its first box, awaits ``before_snapshot`` on
            it, snapshots it (``pool-<pid>-<random>`` in ``runtime.snapshots``; the box then
            serves like any other) and restores every later box from that snapshot: each lease
            still gets a box nobody used. ``prepare`` runs on every box, restored or not.
            ``close()`` removes the snapshot. Default (``None``): whenever the options allow it;
            options a snapshot pool cannot have (``volumes``, a ``snapshot`` of their own) then
            boot every box, and with ``True`` are refused here.
        before_snapshot: With ``from_snapshot``: awaited once on the box that is snapshotted,
            for the in-box part of preparing (e.g. starting a process that every restored box
            then has running); ``prepare`` then does the rest on each restored box.
    """

    def __init__(
        self,
        options: BoxOptions | None = None,
        *,
        runtime: Boxlite | None = None,
        min_idle: int = 1,
        max_size: int = 4,
        max_uses: int = 1,
        max_lifetime: float | None = None,
        acquire_timeout: float = 60.0,
        exhaustion: Literal["wait", "fail"] = "wait",
        prepare: Callable[[Box], Awaitable[Any]] | None = None,
        health_check: Callable[[Box], Awaitable[bool]] | None = None,
        from_snapshot: bool | None = None,
        before_snapshot: Callable[[Box], Awaitable[Any]] | None = None,
    ) -> None:
        options = checked_pool_settings(
            "BoxPool",
            options,
            size_name="max_size",
            max_size=max_size,
            min_idle=min_idle,
            max_uses=max_uses,
            acquire_timeout=acquire_timeout,
        )
        if max_lifetime is not None and max_lifetime <= 0:
            raise InvalidOptionError(f"BoxPool max_lifetime must be positive seconds or None, got {max_lifetime}")
        if exhaustion not in ("wait", "fail"):
            raise InvalidOptionError(f"BoxPool exhaustion must be 'wait' or 'fail', got {exhaustion!r}")
        if from_snapshot is None:
            from_snapshot = snapshot_allowed(options)
        _check_snapshot_settings(options, from_snapshot, before_snapshot)
        self._options = options
        self._runtime = runtime
        self.min_idle = min_idle
        self.max_size = max_size
        self.max_uses = max_uses
        self.max_lifetime = max_lifetime
        self.acquire_timeout = acquire_timeout
        self.exhaustion = exhaustion
        self._prepare = prepare
        self._health_check = health_check or default_health_check
        self._from_snapshot = from_snapshot
        self._before_snapshot = before_snapshot
        self._snapshot = None
        self._snapshot_lock = None

        # Touched only on the library loop (sync_api.loop()); declared in state.py.
        self._idle = deque()
        self._leased = set()
        self._starting = 0
        self._stopping = 0
        self._waiting = 0
        self._created = 0
        self._destroyed = 0
        self._broken = 0
        self._leases = 0
        self._closed = False
        self._tasks = set()
        self._changed = None
        # Creation failures, so waiting acquirers raise them instead of waiting out the timeout.
        self._create_failures = 0
        self._last_create_error = None
        # After a creation failure, background top-ups pause until then (no boot loop on a bad
        # image or a failing prepare); acquirers still start boxes on demand.
        self._retry_after = 0.0
        sync_api.at_exit(self._close)

    # -- public API ---------------------------------------------------------------------------

    @property
    def options(self) -> BoxOptions:
        return self._options

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def from_snapshot(self) -> bool:
        """Whether the pool restores its boxes from a snapshot instead of booting them."""
        return self._from_snapshot

    @property
    def snapshot(self) -> str | None:
        """The name of the snapshot the pool restores its boxes from, once taken (``None``
        before the first box, after :meth:`close`, and without ``from_snapshot``)."""
        return self._snapshot

    async def start(self) -> None:
        """Boots boxes until ``min_idle`` are idle, and waits for them; raises the first
        creation error. Optional: the first lease starts warming the pool too."""
        await sync_api.run_in_library_loop(self._start())

    async def acquire(self) -> Lease:
        """Leases a healthy box; :meth:`release` it when done (or use :meth:`lease`).

        Raises :class:`~boxlite.errors.PoolExhaustedError` when no box comes free in time,
        :class:`~boxlite.errors.PoolClosedError` after :meth:`close`, and the creation error
        (e.g. :class:`~boxlite.errors.ImageError`) when booting a box for this caller fails.
        """
        if sync_api.in_library_loop():
            return await self._acquire()
        delivery, runner = self._submit_acquire()
        try:
            return await asyncio.wrap_future(delivery)
        except asyncio.CancelledError:
            self._abandon(delivery, runner)
            raise

    async def release(self, lease: Lease, *, broken: bool = False) -> None:
        """Returns a leased box. It is destroyed instead of reused when it is broken
        (``broken=True`` or :meth:`Lease.mark_broken`), has served ``max_uses`` leases or is
        older than ``max_lifetime``. Releasing twice does nothing."""
        # Shielded: a caller cancelled while releasing must not leave the box leased forever.
        await asyncio.shield(sync_api.run_in_library_loop(self._release(lease, broken)))

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Lease]:
        """``async with pool.lease() as lease:`` — an exception escaping the block marks the box
        broken (it is destroyed, not reused)."""
        leased = await self.acquire()
        try:
            yield leased
        except BaseException:
            await self.release(leased, broken=True)
            raise
        await self.release(leased)

    async def close(self) -> None:
        """Stops every box of the pool (idle, leased and booting) and waits for them; later
        leases raise :class:`~boxlite.errors.PoolClosedError`. Closing twice does nothing."""
        await asyncio.shield(sync_api.run_in_library_loop(self._close()))

    async def __aenter__(self) -> BoxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> BoxPool:
        self.start_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    def __repr__(self) -> str:
        return f"<boxlite.pool.BoxPool {self.stats()} closed={self._closed}>"


def snapshot_allowed(options: BoxOptions) -> bool:
    """Whether a pool of boxes with these options can refill from its own snapshot: not with
    volumes (a snapshot cannot hold a 9p share), nor when they restore a snapshot already."""
    return not options.volumes and options.snapshot is None


def _check_snapshot_settings(
    options: BoxOptions, from_snapshot: bool, before_snapshot: Callable[[Box], Awaitable[Any]] | None
) -> None:
    if before_snapshot is not None and not from_snapshot:
        raise InvalidOptionError(
            "BoxPool before_snapshot needs from_snapshot=True (without a snapshot, prepare= does all the preparing)"
        )
    if not from_snapshot:
        return
    if options.volumes:
        raise InvalidOptionError(
            "BoxPool from_snapshot=True cannot keep volumes (a snapshot cannot hold a 9p share): "
            "drop the volumes, or leave from_snapshot unset (or False) to boot every box"
        )
    if options.snapshot is not None:
        raise InvalidOptionError(
            f"BoxPool from_snapshot=True takes its own snapshot, but options restore {options.snapshot!r}: "
            "unset options.snapshot, or leave from_snapshot unset (or False) to restore that snapshot into every box"
        )


__all__ = ["BoxPool"]
