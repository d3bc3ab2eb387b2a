"""The code of :mod:`boxlite.pool`, one concern a module; ``boxlite.pool`` re-exports it.

``BoxPool`` is one class built in layers, each a module: ``state.py`` (the settings and state
every layer uses, ``stats()``) → ``snapshotting.py`` (the snapshot a ``from_snapshot=True`` pool
restores its boxes from) → ``filling.py`` (booting, preparing and retiring boxes in the
background) → ``leasing.py`` (acquire, release and close on the library loop; the hand-over to
callers on other threads) → ``sync.py`` (the blocking twins) → ``box_pool.py`` (the constructor
and the public async API). Beside it: ``lease.py`` (``Lease`` and the per-box record),
``stats.py`` (``PoolStats``) and ``health.py`` (``default_health_check``).
"""

from __future__ import annotations

from .box_pool import BoxPool as BoxPool
from .filling import CREATE_RETRY_DELAY as CREATE_RETRY_DELAY
from .health import HEALTH_CHECK_TIMEOUT as HEALTH_CHECK_TIMEOUT
from .health import default_health_check as default_health_check
from .lease import Lease as Lease
from .leasing import TRANSIENT_CREATE_RETRIES as TRANSIENT_CREATE_RETRIES
from .protocol import LeasingPool as LeasingPool
from .protocol import PoolLease as PoolLease
from .snapshotting import SNAPSHOT_PREFIX as SNAPSHOT_PREFIX
from .stats import PoolStats as PoolStats
