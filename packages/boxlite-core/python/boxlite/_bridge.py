"""Awaiting engine operations from any asyncio event loop.

The engine never takes the GIL on its own threads (see ``crates/bindings/src/bridge.rs``): each
operation returns a token, and when it finishes the engine queues its result and signals an
eventfd. Every event loop gets one :class:`_engine.Completer` whose eventfd it watches with
``add_reader``; the loop thread drains the queue and resolves the matching futures.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from . import _engine


class _LoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.completer = _engine.Completer()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        loop.add_reader(self.completer.fileno(), self._drain)

    def _drain(self) -> None:
        for token, ok, value in self.completer.take():
            future = self.pending.pop(token, None)
            if future is None or future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                assert isinstance(value, BaseException)
                future.set_exception(value)


_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBridge] = weakref.WeakKeyDictionary()


async def call(start: Callable[[_engine.Completer], int]) -> Any:
    """Starts an engine operation with this loop's completer and awaits its outcome.

    Cancelling the awaiting task abandons the operation on the engine side too.
    """
    loop = asyncio.get_running_loop()
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = _bridges[loop] = _LoopBridge(loop)
    future: asyncio.Future[Any] = loop.create_future()
    token = start(bridge.completer)
    bridge.pending[token] = future
    try:
        return await future
    except asyncio.CancelledError:
        bridge.pending.pop(token, None)
        bridge.completer.cancel(token)
        raise
