"""``BoxPool``: pre-warmed boxes leased to callers, so a caller does not wait for a VM to boot.

    pool = BoxPool(BoxOptions(rootfs_path=...), min_idle=2, max_size=8)
    async with pool.lease() as lease:
        result = await lease.box.run("python3", ["-c", "print(1)"])
    await pool.close()

By default (``max_uses=1``) every lease gets a fresh box that is destroyed on release, so nothing
leaks between tenants; replacements boot in the background to keep ``min_idle`` boxes ready.
By default (``from_snapshot``) they are restored from a snapshot of the pool's first box instead
of booted, several times faster (``_pool/snapshotting.py``).

The pool's state lives on the library's event loop (:mod:`boxlite.sync_api`), so one pool can be
used from any event loop and from plain threads at once (``lease()`` and ``lease_sync()``), keeps
warming boxes while the caller's loop is idle, and is closed at interpreter exit. ``prepare`` and
``health_check`` run on that loop too: what ``prepare`` returns must be usable from other loops
(boxes and executions are).

The code lives in the private package ``_pool/``, one concern a module (its ``__init__`` says
which); this module re-exports its names, the import path callers have always used. The
constants are read where they are defined (``_pool/health.py``, ``_pool/filling.py``,
``_pool/leasing.py``): patch them there.
"""

from __future__ import annotations

import logging

from ._pool import CREATE_RETRY_DELAY as CREATE_RETRY_DELAY
from ._pool import HEALTH_CHECK_TIMEOUT as HEALTH_CHECK_TIMEOUT
from ._pool import SNAPSHOT_PREFIX as SNAPSHOT_PREFIX
from ._pool import TRANSIENT_CREATE_RETRIES as TRANSIENT_CREATE_RETRIES
from ._pool import BoxPool as BoxPool
from ._pool import Lease as Lease
from ._pool import LeasingPool as LeasingPool
from ._pool import PoolLease as PoolLease
from ._pool import PoolStats as PoolStats
from ._pool import default_health_check as default_health_check

logger = logging.getLogger("boxlite.pool")

__all__ = ["BoxPool", "Lease", "LeasingPool", "PoolLease", "PoolStats", "default_health_check"]
