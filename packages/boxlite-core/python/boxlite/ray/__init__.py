"""A box pool spread over a Ray cluster (optional extra ``boxlite-core[ray]``).

    import ray
    from boxlite.ray import RayBoxPool

    ray.init(address="auto")
    pool = RayBoxPool(BoxOptions(image="python:slim"), per_node_max=8, min_idle=2)
    async with pool.lease() as lease:
        result = await lease.box.run("python3", ["-c", "print(1)"])
    await pool.close()

Every node that hosts boxes advertises the custom resource ``boxlite``
(``ray start --resources='{"boxlite": 1}'``) and has what a local box needs (QEMU, passt,
e2fsprogs, and this package: ``boxlite doctor`` says). :class:`RayBoxPool` places one actor per
such node (``_actor.py``), each owning a local :class:`~boxlite.pool.BoxPool`; a lease's
:class:`RemoteBox` (``_remote.py``) runs every operation on its node. ``_pool.py`` holds the
pool and its leases, ``_stats.py`` the counters, ``_transfer.py`` the packing of
``copy_in``/``copy_out`` trees, ``_watchdog.py`` the process that stops a dead actor's VMs.
"""

from __future__ import annotations

from ._errors import BoxLostError as BoxLostError
from ._pool import RESOURCE as RESOURCE
from ._pool import RayBoxPool as RayBoxPool
from ._pool import RayLease as RayLease
from ._remote import RemoteBox as RemoteBox
from ._remote import RemoteExecution as RemoteExecution
from ._stats import RayPoolStats as RayPoolStats
from ._transfer import MAX_TRANSFER_BYTES as MAX_TRANSFER_BYTES

__all__ = [
    "MAX_TRANSFER_BYTES",
    "RESOURCE",
    "BoxLostError",
    "RayBoxPool",
    "RayLease",
    "RayPoolStats",
    "RemoteBox",
    "RemoteExecution",
]
