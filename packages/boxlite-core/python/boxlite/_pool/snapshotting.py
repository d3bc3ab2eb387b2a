"""Refilling a pool from a snapshot (``BoxPool(from_snapshot=True)``): the pool boots its first
box, runs ``before_snapshot`` on it, snapshots it under an internal name (``pool-<pid>-<random>``;
the box then joins the pool), and creates every later box by restoring that snapshot, which is
much faster than a boot (under TCG here: about 0.2-0.4 s to a restored box against about 1 s to a
booted one).

Every restored box starts from the same saved state and nobody used it: ``max_uses=1`` keeps its
meaning. The snapshot is taken when the first box is needed (a failure is a creation error like
a failed boot, retried by the next creation), and removed by ``close()`` once no box uses it;
the snapshots of pools whose process died without closing them are removed when a pool takes
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets

from ..errors import SnapshotNotFoundError
from ..options import BoxOptions
from ..runtime import Box, Boxlite
from .state import _PoolState

logger = logging.getLogger("boxlite.pool")

#: The start of the names of pools' snapshots (``runtime.snapshots.list()`` shows them):
#: ``pool-<pid of the pool's process>-<random>``.
SNAPSHOT_PREFIX = "pool-"

#: Seconds the first execution in a restored box may take (it warms the emulator up).
WARM_UP_TIMEOUT = 10.0


class _Snapshotting(_PoolState):
    """The pool's snapshot: taken once, restored into every new box, removed on close."""

    async def _create_box(self, runtime: Boxlite, options: BoxOptions) -> Box:
        """Creates one new box of the pool from ``options`` (the pool's, with ``snapshot`` set
        when it is restored from the pool's snapshot). A seam: the pools of ``boxlite.tools``
        whose boxes each forward host ports of their own (browsers, desktops) override it to
        vary the options."""
        return await runtime.create(options)

    async def _new_box(self, runtime: Boxlite) -> Box:
        """A new box for the pool: booted, or restored from the pool's snapshot (the first box
        is the one the snapshot is taken of)."""
        if not self._from_snapshot:
            return await self._create_box(runtime, self._options)
        if self._snapshot_lock is None:
            self._snapshot_lock = asyncio.Lock()
        async with self._snapshot_lock:
            if self._snapshot is None:
                return await self._snapshotted_box(runtime)
            name = self._snapshot
        try:
            box = await self._create_box(runtime, self._options.model_copy(update={"snapshot": name}))
        except SnapshotNotFoundError:
            # Removed behind the pool's back: the next box takes a new one.
            if self._snapshot == name:
                self._snapshot = None
            raise
        try:
            # A restored VM's emulator (TCG) translates the guest's code afresh: its first
            # execution takes several times longer than the next. One here, while the box is
            # not yet idle, keeps that off the lease (its health check, the caller's first run).
            await box.run("true", timeout=WARM_UP_TIMEOUT)
        except BaseException:
            with contextlib.suppress(Exception):
                await box.stop()
            raise
        return box

    async def _snapshotted_box(self, runtime: Boxlite) -> Box:
        """Boots a box, runs ``before_snapshot`` on it and takes the pool's snapshot of it;
        the box then joins the pool like any other (no lease has had it)."""
        _remove_orphans(runtime)
        name = f"{SNAPSHOT_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        box = await self._create_box(runtime, self._options)
        try:
            if self._before_snapshot is not None:
                await self._before_snapshot(box)
            await box.snapshot(name)
        except BaseException:
            with contextlib.suppress(Exception):
                await box.stop()
            raise
        logger.debug("pool snapshot %s taken of box %s", name, box.id)
        self._snapshot = name
        return box

    def _remove_snapshot(self) -> None:
        """Removes the pool's snapshot (after its boxes are gone)."""
        name, self._snapshot = self._snapshot, None
        if name is None:
            return
        runtime = self._runtime or Boxlite.default()
        try:
            runtime.snapshots.remove(name)
        except SnapshotNotFoundError:
            pass
        except Exception as err:
            logger.warning("removing the pool's snapshot %s failed: %s", name, err)


def _remove_orphans(runtime: Boxlite) -> None:
    """Removes the snapshots of pools whose process died without closing them (killed, or
    crashed): their names carry its pid. One still used by a kept box stays."""
    for info in runtime.snapshots.list():
        pid = info.name[len(SNAPSHOT_PREFIX) :].split("-", 1)[0]
        if not info.name.startswith(SNAPSHOT_PREFIX) or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            runtime.snapshots.remove(info.id)
            logger.info("removed snapshot %s of a pool whose process %s is gone", info.name, pid)
        except Exception as err:
            logger.debug("left snapshot %s of a gone pool: %s", info.name, err)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
