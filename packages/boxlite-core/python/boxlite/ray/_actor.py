"""``NodeBoxes``: the Ray actor placed on each eligible node. It owns that node's local
:class:`~boxlite.pool.BoxPool` and runs every operation of the remote boxes leased from it: the
driver's :class:`~boxlite.ray.RemoteBox` calls it by lease id and execution id, so no box or
engine object ever crosses the wire, only bytes, results and errors.

Timeouts are the engine's, on this node: an execution's ``timeout`` and deadline are passed to
the box that runs it. A watchdog process (``_watchdog.py``) kills this node's VMs if the actor
dies without closing its pool.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import BoxliteError
from ..options import BoxOptions, Options
from ..pool import BoxPool, Lease, PoolStats
from ..runtime import Box, Boxlite, BoxMetrics, ExecResult, Execution, FileInfo
from . import _transfer
from ._watchdog import Watchdog

logger = logging.getLogger("boxlite.ray")


@dataclass(frozen=True)
class NodeSettings:
    """What the driver tells each node's actor: the boxes' options and the local pool's sizes."""

    options_json: str
    home_dir: str | None
    min_idle: int
    max_size: int
    max_uses: int
    acquire_timeout: float


@dataclass(eq=False)
class _RunningExec:
    lease_id: str
    execution: Execution
    readers: dict[str, AsyncIterator[bytes]] = field(default_factory=dict)


class NodeBoxes:
    """One node's boxes (see the module docs). Created by :class:`~boxlite.ray.RayBoxPool`,
    pinned to its node; every method is a coroutine run concurrently by Ray."""

    def __init__(self, settings: NodeSettings) -> None:
        self._watchdog = Watchdog()
        runtime = Boxlite(Options(home_dir=settings.home_dir)) if settings.home_dir else Boxlite.default()
        self._pool = BoxPool(
            BoxOptions.model_validate_json(settings.options_json),
            runtime=runtime,
            min_idle=settings.min_idle,
            max_size=settings.max_size,
            max_uses=settings.max_uses,
            acquire_timeout=settings.acquire_timeout,
            prepare=self._watch,
        )
        self._leases: dict[str, Lease] = {}
        self._execs: dict[str, _RunningExec] = {}
        self._abandoned: set[str] = set()

    async def _watch(self, box: Box) -> None:
        # The watchdog checks a VMM's start time before it kills: a pid listed after its box
        # stopped is harmless, so none is ever unlisted.
        pid = box.info().vmm_pid
        if pid is not None:
            self._watchdog.watch(pid)

    # -- the pool ---------------------------------------------------------------------------

    async def start(self) -> str:
        """Boots the node's ``min_idle`` boxes; returns this process's host name."""
        await self._pool.start()
        return os.uname().nodename

    async def acquire(self, lease_id: str, timeout: float) -> str:
        """Leases a box for ``lease_id`` (waiting up to ``timeout`` s); returns its id."""
        saved, self._pool.acquire_timeout = self._pool.acquire_timeout, max(0.0, timeout)
        try:
            lease = await self._pool.acquire()
        finally:
            self._pool.acquire_timeout = saved
        if lease_id in self._abandoned:
            # The driver gave up waiting for this lease: nobody will use or release it.
            self._abandoned.discard(lease_id)
            await self._pool.release(lease, broken=True)
            raise BoxliteError(f"lease {lease_id} was abandoned by the driver")
        self._leases[lease_id] = lease
        return lease.box.id

    async def abandon(self, lease_id: str) -> None:
        """The driver stopped waiting for ``lease_id``: released now if held, else when granted."""
        if lease_id in self._leases:
            await self.release(lease_id, True)
        else:
            self._abandoned.add(lease_id)

    async def release(self, lease_id: str, broken: bool) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return
        for key in [k for k, e in self._execs.items() if e.lease_id == lease_id]:
            running = self._execs.pop(key)
            try:
                await running.execution.kill()
            except BoxliteError:
                broken = True
        await self._pool.release(lease, broken=broken)

    def stats(self) -> PoolStats:
        return self._pool.stats()

    async def set_min_idle(self, count: int) -> int:
        """Keeps ``count`` boxes ready from now on (at most the node's ``max_size``) and boots
        them: raised by the driver when another node is lost, so the cluster's ready boxes are
        rebuilt here. Returns the value in effect."""
        self._pool.min_idle = max(0, min(count, self._pool.max_size))
        await self._pool.start()
        return self._pool.min_idle

    async def close(self) -> None:
        """Stops every box of the node (idle, leased, booting) and ends the watchdog."""
        self._execs.clear()
        self._leases.clear()
        await self._pool.close()
        self._watchdog.close()

    # -- a leased box -----------------------------------------------------------------------

    def _box(self, lease_id: str) -> Box:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise BoxliteError(f"lease {lease_id} is not held on this node (released, or the pool closed)")
        return lease.box

    def _exec(self, key: str) -> _RunningExec:
        running = self._execs.get(key)
        if running is None:
            raise BoxliteError(f"execution {key} is not running on this node (waited for, or its lease released)")
        return running

    async def run(self, lease_id: str, cmd: str, args: list[str], env: list[tuple[str, str]], **kw: Any) -> ExecResult:
        return await self._box(lease_id).run(cmd, args, env, **kw)

    async def exec(self, lease_id: str, cmd: str, args: list[str], env: list[tuple[str, str]], **kw: Any) -> str:
        execution = await self._box(lease_id).exec(cmd, args, env, **kw)
        key = uuid.uuid4().hex
        self._execs[key] = _RunningExec(lease_id, execution)
        return key

    async def read_output(self, key: str, name: str) -> bytes | None:
        """The next chunk of stream ``name`` of execution ``key``; None at its end."""
        running = self._exec(key)
        reader = running.readers.get(name)
        if reader is None:
            stream = running.execution.stdout() if name == "stdout" else running.execution.stderr()
            reader = running.readers[name] = stream.chunks()
        try:
            return await reader.__anext__()
        except StopAsyncIteration:
            return None

    async def write_stdin(self, key: str, data: bytes) -> None:
        await self._exec(key).execution.stdin().send_input(data)

    async def close_stdin(self, key: str) -> None:
        await self._exec(key).execution.stdin().close()

    async def wait(self, key: str) -> ExecResult:
        result = await self._exec(key).execution.wait()
        self._execs.pop(key, None)
        return result

    async def kill(self, key: str) -> None:
        await self._exec(key).execution.kill()

    async def signal(self, key: str, signal: int) -> None:
        await self._exec(key).execution.signal(signal)

    def set_deadline(self, key: str, seconds: float | None) -> bool:
        return self._exec(key).execution.set_deadline(seconds)

    async def metrics(self, lease_id: str) -> BoxMetrics:
        return await self._box(lease_id).metrics()

    async def read_file(self, lease_id: str, path: str, **kw: Any) -> bytes:
        return await self._box(lease_id).read_file(path, **kw)

    async def write_file(self, lease_id: str, path: str, data: bytes, **kw: Any) -> None:
        await self._box(lease_id).write_file(path, data, **kw)

    async def list_dir(self, lease_id: str, path: str) -> list[FileInfo]:
        return await self._box(lease_id).list_dir(path)

    async def stat(self, lease_id: str, path: str, follow_symlinks: bool) -> FileInfo:
        return await self._box(lease_id).stat(path, follow_symlinks=follow_symlinks)

    async def copy_in(self, lease_id: str, archive: bytes, name: str, guest_path: str) -> None:
        """Unpacks the driver's tree here and copies it into the box as ``name`` would be."""
        box = self._box(lease_id)
        with tempfile.TemporaryDirectory(prefix="boxlite-ray-") as scratch:
            tree = _transfer.unpack(archive, scratch)
            named = tree.with_name(name)
            tree.rename(named)
            await box.copy_in(named, guest_path)

    async def copy_out(self, lease_id: str, guest_path: str) -> bytes:
        """The tree at ``guest_path`` in the box, packed for the driver."""
        box = self._box(lease_id)
        with tempfile.TemporaryDirectory(prefix="boxlite-ray-") as scratch:
            target = os.path.join(scratch, _transfer.ROOT)
            await box.copy_out(guest_path, target)
            return _transfer.pack(target)


__all__ = ["NodeBoxes", "NodeSettings"]
