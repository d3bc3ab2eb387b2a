"""The pool's blocking twins (``start_sync``, ``acquire_sync``, ``release_sync``,
``lease_sync``, ``close_sync``), for sync code and for code inside a running event loop: each
blocks the calling thread on the library loop, where the pool lives."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .. import sync_api
from .lease import Lease
from .leasing import _Leasing


class _SyncPool(_Leasing):
    """The blocking methods of :class:`~boxlite.pool.BoxPool`."""

    def start_sync(self) -> None:
        """:meth:`start` for sync code."""
        sync_api.run_sync(self._start())

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

    def close_sync(self) -> None:
        """:meth:`close` for sync code."""
        sync_api.run_sync(self._close())
