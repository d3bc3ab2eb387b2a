"""The one box a browser or computer-use tool session holds for its whole life.

Unlike the Python tool, whose calls are independent (a pool lease per call is fine), a browser
keeps its pages and a desktop its windows between an agent's calls: the session holds one box
from its first call to :meth:`_HeldBox.close`. That box is one of three kinds:

- given (``box=``): started and stopped by its owner, shared as is;
- made by the session on first use (``create``), an async context manager it enters and exits;
- leased from a :class:`~boxlite.pool.BoxPool` (``pool=``) on first use and released on close,
  the pool's ``prepare`` having made the lease's ``resource`` the box the tools drive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Generic, TypeVar

from .._loop import run_in_library_loop
from ..pool import BoxPool, Lease
from ._session import ToolSandboxError

B = TypeVar("B")


class _HeldBox(Generic[B]):
    def __init__(
        self,
        *,
        kind: str,
        box: B | None,
        pool: BoxPool | None,
        create: Callable[[], AbstractAsyncContextManager[B]],
        accepts: Callable[[Any], bool],
    ) -> None:
        if box is not None and pool is not None:
            raise ValueError(f"pass either box= (a started {kind}) or pool=, not both")
        if box is not None and not accepts(box):
            raise TypeError(f"box= must be a {kind}, got {type(box).__name__}")
        self._kind = kind
        self._given = box
        self._pool = pool
        self._create = create
        self._accepts = accepts
        self._box: B | None = box
        self._lease: Lease | None = None
        self._stack: AsyncExitStack | None = None
        self._lock: asyncio.Lock | None = None  # made on the library loop, where it is used
        self._closed = False

    @property
    def owned(self) -> bool:
        """Whether the session made (or leased) its box, and so ends it on close."""
        return self._given is None

    @property
    def started(self) -> bool:
        return self._box is not None

    @property
    def box(self) -> B | None:
        """The box the session drives now (``None`` before its first call; after close, the given box or ``None``)."""
        return self._box

    async def get(self, started: Callable[[B], Any] | None = None) -> B:
        """The session's box, started (or leased) on the first call; ``started`` is awaited once
        on a box the session made (e.g. to wait until its desktop is ready). Call on the library loop."""
        if self._closed:
            raise ToolSandboxError(f"this {self._kind} tool session is closed: create a new one")
        if self._box is not None:
            return self._box
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._box is None:
                self._box = await self._start(started)
        return self._box

    async def _start(self, started: Callable[[B], Any] | None) -> B:
        stack = AsyncExitStack()
        try:
            if self._pool is not None:
                lease = await self._pool.acquire()
                stack.push_async_callback(self._release, lease)
                if not self._accepts(lease.resource):
                    raise ToolSandboxError(
                        f"the pool's leases carry {type(lease.resource).__name__}, not a {self._kind}: "
                        f"give the pool a prepare= that returns the {self._kind} to drive for each box"
                    )
                self._lease = lease
                box: B = lease.resource
            else:
                box = await stack.enter_async_context(self._create())
                if started is not None:
                    await started(box)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return box

    async def _release(self, lease: Lease) -> None:
        assert self._pool is not None
        await self._pool.release(lease, broken=lease.broken)

    def mark_broken(self) -> None:
        """The box is in a state no later session may inherit (a pooled one is destroyed)."""
        if self._lease is not None:
            self._lease.mark_broken()

    async def close(self) -> None:
        """Ends the session: stops the box it made, or gives the leased one back to its pool;
        a given box is left to its owner."""
        await run_in_library_loop(self._close_here())

    async def _close_here(self) -> None:
        self._closed = True
        stack, self._stack = self._stack, None
        self._box = self._given
        self._lease = None
        if stack is not None:
            await stack.aclose()
