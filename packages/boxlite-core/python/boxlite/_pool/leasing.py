"""Leasing on the library loop: starting a pool, handing out healthy boxes (waiting for one,
surfacing creation errors, retrying a box that did not boot), taking them back, closing.

Callers on other threads or loops reach this through the hand-over at the end of the class:
an acquire runs on the library loop and its lease is delivered through a future, so that a
caller giving up just as its lease is granted does not strand the box.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time

from .. import sync_api
from ..errors import (
    BoxDiedError,
    BoxStartError,
    ChannelError,
    InvalidOptionError,
    PoolClosedError,
    PoolExhaustedError,
)
from .filling import _Filling
from .lease import Lease, _PooledBox

logger = logging.getLogger("boxlite.pool")

#: Boots an acquirer retries after a failure that may be transient (the VM did not come up).
TRANSIENT_CREATE_RETRIES = 1

_TRANSIENT_CREATE_ERRORS = (BoxStartError, BoxDiedError, ChannelError)


class _Leasing(_Filling):
    """Start, acquire, release and close, on the library loop (and the hand-over to callers
    on other threads)."""

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
                    return Lease(self, pooled)  # type: ignore[arg-type]  # self is the BoxPool
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
        self._remove_snapshot()  # its boxes are gone
        logger.debug("pool closed: %s", self.stats())

    # -- the hand-over to callers on other threads ----------------------------------------------

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
