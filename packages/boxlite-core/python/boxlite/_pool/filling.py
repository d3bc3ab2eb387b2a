"""Keeping a pool filled: booting (or restoring, ``snapshotting.py``) and preparing boxes in
the background (for ``min_idle`` and for waiting callers, within ``max_size``), retiring idle
boxes at ``max_lifetime``, and stopping retired boxes without making anyone wait.

After a failed boot or ``prepare``, background top-ups pause for :data:`CREATE_RETRY_DELAY`
so that a bad image does not become a boot loop; acquirers still start boxes on demand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..runtime import Box, Boxlite
from .lease import _PooledBox
from .snapshotting import _Snapshotting

logger = logging.getLogger("boxlite.pool")

#: Seconds background replenishment pauses after a box failed to boot or prepare.
CREATE_RETRY_DELAY = 5.0


class _Filling(_Snapshotting):
    """Boots, prepares, expires and stops the pool's boxes (on the library loop)."""

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
        """Boots (or restores) and prepares one box (``_starting`` was counted by the caller)."""
        runtime = self._runtime or Boxlite.default()
        box: Box | None = None
        try:
            box = await self._new_box(runtime)
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
