"""``RayBoxPool``: one :class:`~boxlite.pool.BoxPool` per eligible Ray node, each owned by a
``NodeBoxes`` actor pinned to its node, and the leases the driver hands out across them."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .._blocking import blocking
from .._pool.settings import checked_pool_settings
from ..errors import InvalidOptionError, PoolClosedError, PoolExhaustedError
from ..options import BoxOptions
from . import _stats
from ._actor import NodeBoxes, NodeSettings
from ._errors import BoxLostError
from ._remote import BLOCKING_CALL_TIMEOUT, NodeLink, RemoteBox
from ._stats import RayPoolStats

logger = logging.getLogger("boxlite.ray")

#: The custom Ray resource a node advertises to host boxes (``ray start --resources='{"boxlite": 1}'``).
RESOURCE = "boxlite"

#: How often an acquirer waiting for capacity looks again (seconds).
POLL_INTERVAL = 0.05

#: How often a waiting acquirer asks Ray for new eligible nodes (seconds).
NODE_SCAN_INTERVAL = 1.0

_NodeActor = ray.remote(NodeBoxes)


@dataclass(eq=False)
class _Node:
    link: NodeLink
    #: Leases the driver holds on this node now (what "least loaded" compares).
    leased: int = 0


class RayLease:
    """A box leased from a :class:`RayBoxPool`, until it is released: what
    :class:`~boxlite.pool.Lease` offers (``box``, ``resource``, ``broken``, ``mark_broken``)."""

    def __init__(self, node: _Node, lease_id: str, box: RemoteBox) -> None:
        self._node = node
        self._id = lease_id
        self._box = box
        self._broken = False
        self._released = False

    @property
    def box(self) -> RemoteBox:
        """The leased box (on :attr:`node_id`)."""
        return self._box

    @property
    def node_id(self) -> str:
        return self._node.link.node_id

    @property
    def resource(self) -> None:
        """Always ``None``: a remote box has no driver-side ``prepare`` resource."""
        return None

    @property
    def broken(self) -> bool:
        return self._broken or self._node.link.lost is not None

    def mark_broken(self) -> None:
        """The box must not be reused: it is destroyed on release."""
        self._broken = True

    def __repr__(self) -> str:
        return f"<boxlite.ray.RayLease box={self._box.id} node={self.node_id} broken={self.broken}>"


class RayBoxPool:
    """Pre-warmed boxes on every eligible node of a Ray cluster, leased from a driver.

    One ``NodeBoxes`` actor is placed on each alive node that advertises the custom resource
    ``resource`` (default :data:`RESOURCE`, ``"boxlite"``), or on the ones listed in ``nodes``;
    each owns a local :class:`~boxlite.pool.BoxPool` of ``options`` boxes. A lease goes to the
    node with the fewest leases that has room; its box offers what a local box offers, run on
    its node (see :class:`~boxlite.ray.RemoteBox`), so :class:`~boxlite.tools.ToolSandbox` and
    the framework tools take a ``RayBoxPool`` wherever they take a ``BoxPool``.

    A node (or its actor) that dies fails the calls in flight on it with
    :class:`~boxlite.ray.BoxLostError` (naming the box and the node); its leases are never handed
    out again and later leases go to the other nodes (and to nodes that joined since).
    :meth:`close` stops every box on every node; a driver that exits kills its actors, and each
    actor's watchdog kills the VMs it left.

    Args:
        options: The boxes' options (default: ``BoxOptions(image=default_image())``). An image
            path must exist on every node; a reference is pulled by each node.
        per_node_max: Most boxes at once on one node (idle, leased, booting).
        min_idle: Boxes each node keeps booted and ready.
        nodes: Ray node ids (hex) to use; default every alive node with the resource.
        acquire_timeout: Seconds :meth:`acquire` waits for a box before raising
            :class:`~boxlite.errors.PoolExhaustedError`.
        max_uses: Leases a box serves before it is destroyed (1: a fresh box for every lease).
        home_dir: The ``BOXLITE_HOME`` of the nodes' runtimes (default: each node's own).
        resource: The custom resource that marks a node eligible.
    """

    def __init__(
        self,
        options: BoxOptions | None = None,
        *,
        per_node_max: int = 4,
        min_idle: int = 1,
        nodes: Sequence[str] | None = None,
        acquire_timeout: float = 60.0,
        max_uses: int = 1,
        home_dir: str | None = None,
        resource: str = RESOURCE,
    ) -> None:
        options = checked_pool_settings(
            "RayBoxPool",
            options,
            size_name="per_node_max",
            max_size=per_node_max,
            min_idle=min_idle,
            max_uses=max_uses,
            acquire_timeout=acquire_timeout,
        )
        self._options = options
        self.per_node_max = per_node_max
        self.min_idle = min_idle
        self.acquire_timeout = acquire_timeout
        self.max_uses = max_uses
        self.resource = resource
        self._wanted = list(nodes) if nodes is not None else None
        self._settings = NodeSettings(
            options_json=options.model_dump_json(),
            home_dir=home_dir,
            min_idle=min_idle,
            max_size=per_node_max,
            max_uses=max_uses,
            acquire_timeout=acquire_timeout,
        )
        self._nodes: dict[str, _Node] = {}
        self._lost: list[str] = []
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._exit_hook_set = False
        self._next_scan = 0.0

    # -- nodes --------------------------------------------------------------------------------

    @property
    def options(self) -> BoxOptions:
        return self._options

    @property
    def closed(self) -> bool:
        return self._closed

    def eligible_nodes(self) -> list[str]:
        """Ray node ids (hex) that may host this pool's boxes now: alive, advertising the
        resource, among ``nodes`` when given, and not lost by this pool."""
        if not ray.is_initialized():
            raise InvalidOptionError("RayBoxPool needs a Ray connection: call ray.init() (address=...) first")
        found = [
            n["NodeID"]
            for n in ray.nodes()  # type: ignore[no-untyped-call]
            if n.get("Alive") and n.get("Resources", {}).get(self.resource, 0) > 0 and n["NodeID"] not in self._lost
        ]
        if self._wanted is not None:
            found = [n for n in found if n in self._wanted]
        return found

    def _place_missing(self) -> list[_Node]:
        """Places an actor on every eligible node without one; returns the new ones."""
        placed = []
        for node_id in self.eligible_nodes():
            with self._lock:
                if node_id in self._nodes or self._closed:
                    continue
                actor = _NodeActor.options(
                    num_cpus=0,
                    resources={self.resource: 0.001},
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                ).remote(self._settings)
                node = _Node(NodeLink(node_id, actor, self._on_lost))
                self._nodes[node_id] = node
            logger.info("boxlite actor placed on Ray node %s", node_id)
            placed.append(node)
        if placed and not self._exit_hook_set:
            # After ray.init's own hook, so it runs first: the actors go while Ray still answers.
            atexit.register(self._kill_actors)
            self._exit_hook_set = True
        return placed

    def _on_lost(self, link: NodeLink, cause: BaseException) -> None:
        logger.warning("Ray node %s was lost (%s): its boxes are gone; leases go to other nodes", link.node_id, cause)
        with self._lock:
            self._nodes.pop(link.node_id, None)
            self._lost.append(link.node_id)
        with contextlib.suppress(Exception):
            ray.kill(link.actor)

    def _kill_actors(self) -> None:
        with self._lock:
            nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            with contextlib.suppress(Exception):
                ray.kill(node.link.actor)

    # -- public API ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Places the actors and boots ``min_idle`` boxes on each node, and waits for them.
        Optional: the first lease starts the pool too."""
        if self._closed:
            raise PoolClosedError("the pool is closed: make a new RayBoxPool")
        self._place_missing()
        self._started = True
        if not self._nodes:
            raise PoolExhaustedError(self._no_nodes())
        nodes = list(self._nodes.values())
        results = await asyncio.gather(*(n.link.call(None, "start") for n in nodes), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, BoxLostError)]
        if errors:
            raise errors[0]

    def _no_nodes(self) -> str:
        wanted = f" among nodes={self._wanted}" if self._wanted is not None else ""
        lost = f" ({len(self._lost)} lost)" if self._lost else ""
        return (
            f"no alive Ray node advertises the resource {self.resource!r}{wanted}{lost}: start nodes with "
            f"`ray start --resources='{{\"{self.resource}\": 1}}'` (each needs QEMU, passt and e2fsprogs)"
        )

    def _pick(self) -> _Node | None:
        with self._lock:
            room = [n for n in self._nodes.values() if n.link.lost is None and n.leased < self.per_node_max]
            if not room:
                return None
            node = min(room, key=lambda n: n.leased)
            node.leased += 1
            return node

    def _unpick(self, node: _Node) -> None:
        with self._lock:
            node.leased -= 1

    async def acquire(self) -> RayLease:
        """Leases a box on the least-loaded node with room; :meth:`release` it when done (or
        use :meth:`lease`).

        Raises :class:`~boxlite.errors.PoolExhaustedError` when no box comes free within
        ``acquire_timeout`` (or no node is eligible), :class:`~boxlite.errors.PoolClosedError`
        after :meth:`close`, and a node's creation error (e.g. an image error) as it is.
        """
        if not self._started:
            await self.start()
        deadline = time.monotonic() + self.acquire_timeout
        while True:
            if self._closed:
                raise PoolClosedError("the pool is closed: make a new RayBoxPool")
            node = self._pick()
            if node is None:
                if time.monotonic() >= self._next_scan:
                    self._next_scan = time.monotonic() + NODE_SCAN_INTERVAL
                    self._place_missing()
                if not self._nodes:
                    raise PoolExhaustedError(self._no_nodes())
                if time.monotonic() >= deadline:
                    raise PoolExhaustedError(
                        f"no box came free within {self.acquire_timeout:g} s: every node holds per_node_max="
                        f"{self.per_node_max} leased boxes; release leases, add nodes or raise acquire_timeout"
                    )
                await asyncio.sleep(POLL_INTERVAL)
                continue
            lease_id = uuid.uuid4().hex
            try:
                box_id = await node.link.call(None, "acquire", lease_id, max(0.0, deadline - time.monotonic()))
            except BoxLostError:
                self._unpick(node)
                continue  # that node is gone: the next try goes to another one
            except asyncio.CancelledError:
                self._unpick(node)
                # The node may still grant it: it is released (broken) as soon as it is.
                node.link.actor.abandon.remote(lease_id)
                raise
            except BaseException:
                self._unpick(node)
                raise
            return RayLease(node, lease_id, RemoteBox(node.link, lease_id, box_id))

    async def release(self, lease: RayLease, *, broken: bool = False) -> None:
        """Returns a leased box; a broken one (or one past ``max_uses``) is destroyed on its
        node. A lease of a lost node is already gone. Releasing twice does nothing."""
        if lease._released:
            return
        lease._released = True
        self._unpick(lease._node)
        link = lease._node.link
        if link.lost is not None:
            return
        with contextlib.suppress(BoxLostError):
            await asyncio.shield(link.call(lease.box.id, "release", lease._id, broken or lease._broken))

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[RayLease]:
        """``async with pool.lease() as lease:`` — an exception escaping the block marks the box
        broken (it is destroyed, not reused)."""
        leased = await self.acquire()
        try:
            yield leased
        except BaseException:
            await self.release(leased, broken=True)
            raise
        await self.release(leased)

    def stats(self) -> RayPoolStats:
        """The counters of every node's pool and their total (a lost node counts in
        ``lost_nodes`` only). Blocks for a round trip to each node."""
        with self._lock:
            nodes = dict(self._nodes)
        per_node: dict[str, Any] = {}
        for node_id, node in nodes.items():
            try:
                per_node[node_id] = node.link.call_blocking(None, "stats")
            except BoxLostError:
                continue
            except Exception as e:  # a slow node: reported empty, not failing the whole call
                logger.warning("stats of Ray node %s: %s", node_id, e)
                per_node[node_id] = _stats.EMPTY
        return RayPoolStats(total=_stats.add(per_node.values()), nodes=per_node, lost_nodes=tuple(self._lost))

    async def close(self) -> None:
        """Stops every box on every node (idle, leased and booting), waits for them, and ends
        the actors; later leases raise :class:`~boxlite.errors.PoolClosedError`. Closing twice
        does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            nodes = list(self._nodes.values())
        results = await asyncio.gather(
            *(asyncio.wait_for(n.link.call(None, "close"), BLOCKING_CALL_TIMEOUT * 4) for n in nodes),
            return_exceptions=True,
        )
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, BoxLostError):
                why = f"{result}"
                logger.warning("closing Ray node %s failed (its watchdog stops the boxes): %s", node.link.node_id, why)
        self._kill_actors()

    start_sync = blocking(start)
    acquire_sync = blocking(acquire)
    release_sync = blocking(release)
    close_sync = blocking(close)

    async def __aenter__(self) -> RayBoxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<boxlite.ray.RayBoxPool nodes={len(self._nodes)} lost={len(self._lost)} closed={self._closed}>"


__all__ = ["RESOURCE", "RayBoxPool", "RayLease"]
