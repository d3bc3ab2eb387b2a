"""``BoxPool``: pre-warmed boxes leased to callers, so a caller does not wait for a VM to boot.

    pool = BoxPool(BoxOptions(rootfs_path=...), min_idle=2, max_size=8)
    async with pool.lease() as lease:
        result = await lease.box.run("python3", ["-c", "print(1)"])
    await pool.close()

By default (``max_uses=1``) every lease gets a fresh box that is destroyed on release, so nothing
leaks between tenants; replacements boot in the background to keep ``min_idle`` boxes ready.

The pool's state lives on the library's event loop (:mod:`boxlite.sync_api`), so one pool can be
used from any event loop and from plain threads at once (``lease()`` and ``lease_sync()``), keeps
warming boxes while the caller's loop is idle, and is closed at interpreter exit. ``prepare`` and
``health_check`` run on that loop too: what ``prepare`` returns must be usable from other loops
(boxes and executions are).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from . import sync_api
from .codebox import default_image
from .errors import (
    BoxDiedError,
    BoxStartError,
    ChannelError,
    InvalidOptionError,
    PoolClosedError,
    PoolExhaustedError,
)
from .options import BoxOptions
from .runtime import Box, Boxlite

logger = logging.getLogger("boxlite.pool")

#: Seconds the default health check allows its ``true`` execution.
HEALTH_CHECK_TIMEOUT = 10.0

#: Seconds background replenishment pauses after a box failed to boot or prepare.
CREATE_RETRY_DELAY = 5.0

#: Boots an acquirer retries after a failure that may be transient (the VM did not come up).
TRANSIENT_CREATE_RETRIES = 1

_TRANSIENT_CREATE_ERRORS = (BoxStartError, BoxDiedError, ChannelError)


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


async def default_health_check(box: Box) -> bool:
    """The box is running and a quick ``true`` execution succeeds."""
    if box.info().status != "running":
        return False
    result = await box.run("true", timeout=HEALTH_CHECK_TIMEOUT)
    return result.exit_code == 0


class BoxPool:
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
    ) -> None:
        if max_size < 1:
            raise InvalidOptionError(f"BoxPool max_size must be at least 1, got {max_size}")
        if not 0 <= min_idle <= max_size:
            raise InvalidOptionError(f"BoxPool min_idle must be between 0 and max_size ({max_size}), got {min_idle}")
        if max_uses < 1:
            raise InvalidOptionError(f"BoxPool max_uses must be at least 1, got {max_uses}")
        if max_lifetime is not None and max_lifetime <= 0:
            raise InvalidOptionError(f"BoxPool max_lifetime must be positive seconds or None, got {max_lifetime}")
        if acquire_timeout < 0:
            raise InvalidOptionError(f"BoxPool acquire_timeout must be >= 0 seconds, got {acquire_timeout}")
        if exhaustion not in ("wait", "fail"):
            raise InvalidOptionError(f"BoxPool exhaustion must be 'wait' or 'fail', got {exhaustion!r}")
        options = options if options is not None else BoxOptions(image=default_image())
        if options.name is not None:
            raise InvalidOptionError(
                f"BoxPool options must not set a name ({options.name!r}): the pool's boxes cannot share one"
            )
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

        # Touched only on the library loop (sync_api.loop()).
        self._idle: deque[_PooledBox] = deque()
        self._leased: set[_PooledBox] = set()
        self._starting = 0
        self._stopping = 0
        self._waiting = 0
        self._created = 0
        self._destroyed = 0
        self._broken = 0
        self._leases = 0
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed: asyncio.Condition | None = None
        # Creation failures, so waiting acquirers raise them instead of waiting out the timeout.
        self._create_failures = 0
        self._last_create_error: BaseException | None = None
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

    async def start(self) -> None:
        """Boots boxes until ``min_idle`` are idle, and waits for them; raises the first
        creation error. Optional: the first lease starts warming the pool too."""
        await sync_api.run_in_library_loop(self._start())

    def start_sync(self) -> None:
        """:meth:`start` for sync code."""
        sync_api.run_sync(self._start())

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

    def _submit_acquire(self) -> tuple[concurrent.futures.Future[Lease], concurrent.futures.Future[None]]:
        """Starts an acquire on the library loop for a caller on another thread.

        The lease is handed over through ``delivery`` so that a caller giving up just as its
        lease is granted does not strand it: whichever side sees the other give up releases it.
        """
        delivery: concurrent.futures.Future[Lease] = concurrent.futures.Future()

        async def acquire_for_caller() -> None:
            try:
                lease = await self._acquire()
            except BaseException as err:
                if delivery.set_running_or_notify_cancel():
                    delivery.set_exception(err)
                return
            if delivery.set_running_or_notify_cancel():
                delivery.set_result(lease)
            else:
                await self._release(lease, False)

        return delivery, asyncio.run_coroutine_threadsafe(acquire_for_caller(), sync_api.loop())

    def _abandon(self, delivery: concurrent.futures.Future[Lease], runner: concurrent.futures.Future[None]) -> None:
        """The caller gave up waiting for ``delivery``: stop the acquire, or release its lease."""
        if delivery.cancel() or delivery.cancelled():
            runner.cancel()
        else:
            delivery.add_done_callback(self._release_undelivered)

    def _release_undelivered(self, delivery: concurrent.futures.Future[Lease]) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            asyncio.run_coroutine_threadsafe(self._release(delivery.result(), False), sync_api.loop())

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

    def acquire_sync(self) -> Lease:
        """:meth:`acquire` for sync code (also from inside a running event loop)."""
        if sync_api.in_library_loop():
            raise RuntimeError("acquire_sync() on boxlite's own event loop thread would deadlock: await acquire()")
        delivery, runner = self._submit_acquire()
        try:
            return delivery.result()
        except BaseException:
            # Ctrl-C while waiting, or the acquire failed (then there is nothing to release).
            self._abandon(delivery, runner)
            raise

    def release_sync(self, lease: Lease, *, broken: bool = False) -> None:
        """:meth:`release` for sync code."""
        sync_api.run_sync(self._release(lease, broken))

    @contextlib.contextmanager
    def lease_sync(self) -> Iterator[Lease]:
        """``with pool.lease_sync() as lease:`` — :meth:`lease` for sync code; safe inside a
        running event loop. Use the box with :class:`~boxlite.sync_api.SyncBox` or ``run_sync``."""
        leased = self.acquire_sync()
        try:
            yield leased
        except BaseException:
            self.release_sync(leased, broken=True)
            raise
        self.release_sync(leased)

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

    async def close(self) -> None:
        """Stops every box of the pool (idle, leased and booting) and waits for them; later
        leases raise :class:`~boxlite.errors.PoolClosedError`. Closing twice does nothing."""
        await asyncio.shield(sync_api.run_in_library_loop(self._close()))

    def close_sync(self) -> None:
        """:meth:`close` for sync code."""
        sync_api.run_sync(self._close())

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

    def _top_up(self, on_demand: bool = False) -> list[asyncio.Task[Any]]:
        """Starts boxes for ``min_idle`` and for the waiting callers, within ``max_size``."""
        if self._closed or (not on_demand and time.monotonic() < self._retry_after):
            return []
        wanted = max(self.min_idle, self._waiting) - (len(self._idle) + self._starting)
        room = self.max_size - self._total()
        count = max(0, min(wanted, room))
        # Counted now, not when the task first runs, so the next top-up sees them.
        self._starting += count
        return [self._spawn(self._create_one()) for _ in range(count)]

    async def _create_one(self) -> None:
        """Boots and prepares one box (``_starting`` was counted by the caller)."""
        runtime = self._runtime or Boxlite.default()
        box: Box | None = None
        try:
            box = await runtime.create(self._options)
            resource = await self._prepare(box) if self._prepare is not None else None
            pooled = _PooledBox(box, resource, time.monotonic())
        except BaseException as err:
            if box is not None:
                # prepare failed: the box is not fit for use.
                self._broken += 1
                self._retire_box(box)
            if isinstance(err, Exception):
                logger.warning("creating a pool box failed: %s", err)
                self._last_create_error = err
                self._create_failures += 1
                self._retry_after = time.monotonic() + CREATE_RETRY_DELAY
            self._starting -= 1
            await self._notify()
            raise
        self._starting -= 1
        self._created += 1
        self._retry_after = 0.0
        if self._closed:
            self._retire(pooled)
        else:
            self._make_idle(pooled)
        await self._notify()

    def _make_idle(self, pooled: _PooledBox) -> None:
        self._idle.append(pooled)
        if self.max_lifetime is not None:
            remaining = max(0.0, pooled.born + self.max_lifetime - time.monotonic())
            pooled.expiry = asyncio.get_running_loop().call_later(remaining, self._expire, pooled)

    def _expire(self, pooled: _PooledBox) -> None:
        """Retires an idle box that reached ``max_lifetime``, and boots its replacement."""
        if pooled in self._idle:
            self._idle.remove(pooled)
            logger.debug("retiring pool box %s: max_lifetime reached", pooled.box.id)
            self._retire(pooled)
            self._top_up()

    def _expired(self, pooled: _PooledBox) -> bool:
        return self.max_lifetime is not None and time.monotonic() - pooled.born >= self.max_lifetime

    def _retire(self, pooled: _PooledBox) -> None:
        """Stops a pooled box in the background (once, however often it is retired)."""
        if pooled.expiry is not None:
            pooled.expiry.cancel()
        if pooled.destroyed:
            return
        pooled.destroyed = True
        self._retire_box(pooled.box)

    def _retire_box(self, box: Box) -> None:
        # Counted now: the stopping VM still takes its place within max_size.
        self._stopping += 1
        self._spawn(self._stop_box(box))

    async def _stop_box(self, box: Box) -> None:
        try:
            await box.stop()
            if not self._options.auto_remove:
                await box._runtime.remove(box.id, force=True)
        except Exception as err:
            logger.warning("stopping pool box %s failed: %s", box.id, err)
        finally:
            self._stopping -= 1
            self._destroyed += 1
            self._top_up()
            await self._notify()

    async def _start(self) -> None:
        if self._closed:
            raise PoolClosedError("the pool is closed: make a new BoxPool")
        results = await asyncio.gather(*self._top_up(on_demand=True), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _healthy(self, pooled: _PooledBox) -> bool:
        try:
            return bool(await self._health_check(pooled.box))
        except Exception as err:
            logger.warning("health check of pool box %s raised: %s", pooled.box.id, err)
            return False

    async def _acquire(self) -> Lease:
        deadline = time.monotonic() + self.acquire_timeout
        failures_seen = self._create_failures
        retries_left = TRANSIENT_CREATE_RETRIES
        self._waiting += 1
        try:
            while True:
                if self._closed:
                    raise PoolClosedError("the pool is closed: make a new BoxPool")
                while self._idle:
                    pooled = self._idle.popleft()
                    if pooled.expiry is not None:
                        pooled.expiry.cancel()
                        pooled.expiry = None
                    if self._expired(pooled):
                        self._retire(pooled)
                        continue
                    self._leased.add(pooled)  # counted while the health check runs
                    try:
                        healthy = await self._healthy(pooled)
                    except asyncio.CancelledError:
                        # The caller gave up mid-check: the box's state is unknown, so it goes.
                        self._leased.discard(pooled)
                        self._retire(pooled)
                        raise
                    if not healthy:
                        logger.warning("pool box %s failed its health check: destroying it", pooled.box.id)
                        self._leased.discard(pooled)
                        self._broken += 1
                        self._retire(pooled)
                        continue
                    if self._closed:
                        self._leased.discard(pooled)
                        self._retire(pooled)
                        raise PoolClosedError("the pool is closed: make a new BoxPool")
                    pooled.uses += 1
                    self._leases += 1
                    self._top_up()
                    return Lease(self, pooled)
                if self._create_failures != failures_seen and self._starting == 0:
                    # Booting failed and nothing else is booting: surface the cause (e.g. an
                    # ImageError naming the fix) instead of waiting out the timeout; a VM that
                    # did not come up may be a one-off, so that gets another boot first.
                    err = self._last_create_error
                    assert err is not None
                    if not isinstance(err, _TRANSIENT_CREATE_ERRORS) or retries_left == 0:
                        raise err
                    retries_left -= 1
                    failures_seen = self._create_failures
                    logger.warning("retrying a pool box that did not boot: %s", err)
                self._top_up(on_demand=True)
                if self.exhaustion == "fail" and len(self._leased) >= self.max_size:
                    raise PoolExhaustedError(
                        f"all {self.max_size} boxes of the pool are leased (exhaustion='fail'): "
                        "release leases sooner, raise max_size, or use exhaustion='wait'"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolExhaustedError(
                        f"no box of the pool came free within acquire_timeout={self.acquire_timeout} s "
                        f"({len(self._leased)} leased, {self._starting} starting, max_size={self.max_size}): "
                        "release leases sooner, raise max_size or acquire_timeout"
                    )
                async with self._cond:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), remaining)
        finally:
            self._waiting -= 1

    async def _release(self, lease: Lease, broken: bool) -> None:
        if lease._pool is not self:
            raise InvalidOptionError("this lease belongs to another BoxPool")
        if lease._released:
            return
        lease._released = True
        pooled = lease._pooled
        self._leased.discard(pooled)
        if broken:
            pooled.broken = True
        if pooled.broken:
            self._broken += 1
        if self._closed or pooled.broken or pooled.uses >= self.max_uses or self._expired(pooled):
            # Destroyed in the background: the caller does not wait for the VM to stop.
            self._retire(pooled)
        else:
            self._make_idle(pooled)
        self._top_up()
        await self._notify()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        sync_api.forget_at_exit(self._close)
        await self._notify()
        # Let booting boxes finish: _create_one destroys them once it sees the pool closed.
        boxes = list(self._idle) + list(self._leased)
        self._idle.clear()
        self._leased.clear()
        for pooled in boxes:
            self._retire(pooled)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        logger.debug("pool closed: %s", self.stats())


__all__ = ["BoxPool", "Lease", "PoolStats", "default_health_check"]
