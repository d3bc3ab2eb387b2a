"""The library's event loop: one asyncio loop in a daemon thread, started on first use.

Every sync call (:mod:`boxlite.sync_api`) and every pool (:mod:`boxlite.pool`) runs its
coroutines here: :func:`run_sync` blocks the calling thread on one, :func:`run_in_library_loop`
awaits one from any other loop, :func:`iterate_sync` walks an async iterable step by step. It
lives apart from the ``Sync*`` classes because it also owns process-wide state: the at-exit
shutdown (``at_exit`` callbacks, then every box, then the loop) and the reset after ``fork``.

At-exit order (atexit is LIFO): this module imports :mod:`boxlite.runtime` before it registers
:func:`_shutdown_at_exit`, so that handler always runs before ``runtime``'s own.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from . import runtime as _runtime

logger = logging.getLogger("boxlite.sync_api")

T = TypeVar("T")

#: Seconds allowed at exit for the ``at_exit`` callbacks (closing pools) on the library loop.
EXIT_CALLBACK_TIMEOUT = 30.0


class _LoopThread:
    """The library's event loop, running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="boxlite-loop", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


_loop_thread: _LoopThread | None = None
_loop_lock = threading.Lock()
_exiting = False
# Coroutine functions run on the library loop at exit, before boxes are stopped (e.g. pool.close).
_exit_callbacks: list[Callable[[], Coroutine[Any, Any, Any]]] = []


def loop() -> asyncio.AbstractEventLoop:
    """The library's background event loop (started on first use)."""
    global _loop_thread
    with _loop_lock:
        if _exiting:
            raise RuntimeError("the interpreter is exiting: boxlite's event loop is shut down")
        if _loop_thread is None:
            _loop_thread = _LoopThread()
            logger.debug("started the boxlite event loop thread")
        return _loop_thread.loop


def in_library_loop() -> bool:
    """Whether the calling thread is the library loop's thread."""
    return _loop_thread is not None and threading.current_thread() is _loop_thread.thread


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Runs ``coro`` on the library's event loop and blocks the calling thread until it ends.

    Works whether or not the calling thread runs an event loop of its own (that loop is blocked
    for the duration). ``timeout`` (seconds) cancels the coroutine and raises ``TimeoutError``;
    so does Ctrl-C (``KeyboardInterrupt``), which cancels it before propagating. Cancelled
    executions are killed in the box.
    """
    if in_library_loop():
        coro.close()
        raise RuntimeError(
            "run_sync() was called from boxlite's own event loop thread, which would deadlock: "
            "await the coroutine instead"
        )
    try:
        target = loop()
    except RuntimeError:
        coro.close()
        raise
    future = asyncio.run_coroutine_threadsafe(coro, target)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        if future.done() and not future.cancelled():
            raise  # the coroutine's own TimeoutError (the same class since Python 3.11), not ours
        future.cancel()
        raise TimeoutError(f"the operation did not finish within {timeout} s and was cancelled") from None
    except BaseException:
        # KeyboardInterrupt and friends: do not leave the coroutine running unobserved.
        future.cancel()
        raise


def iterate_sync(iterable: AsyncIterable[T], timeout: float | None = None) -> Iterator[T]:
    """Iterates an async iterable (e.g. an execution's output stream) from sync code.

    Every step runs on the library loop via :func:`run_sync` (``timeout`` applies per item);
    leaving the loop early closes the async iterator there.
    """
    iterator = aiter(iterable)
    try:
        while True:
            try:
                yield run_sync(_next_item(iterator), timeout)
            except StopAsyncIteration:
                return
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None and not _exiting:
            run_sync(close())


async def _next_item(iterator: AsyncIterator[T]) -> T:
    return await anext(iterator)


async def run_in_library_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Awaits ``coro`` on the library loop from any event loop (directly when already on it).

    For state that lives on the library loop (pools): its asyncio primitives are bound to it.
    """
    if in_library_loop():
        return await coro
    try:
        target = loop()
    except RuntimeError:
        coro.close()
        raise
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, target))


def at_exit(callback: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Registers a coroutine function run on the library loop at interpreter exit."""
    _exit_callbacks.append(callback)


def forget_at_exit(callback: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Unregisters a callback registered with :func:`at_exit`."""
    with contextlib.suppress(ValueError):
        _exit_callbacks.remove(callback)


async def _run_exit_callbacks(callbacks: list[Callable[[], Coroutine[Any, Any, Any]]]) -> None:
    results = await asyncio.gather(*(callback() for callback in callbacks), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            logger.error("an exit callback failed: %r", result)


def _forget_loop_in_child() -> None:
    """A forked child has no loop thread (threads do not survive fork): start a new one on use."""
    global _loop_thread, _loop_lock
    _loop_thread = None
    _loop_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_loop_in_child)


@atexit.register
def _shutdown_at_exit() -> None:
    """Exit order: ``at_exit`` callbacks (on the loop), every box stopped, then the loop.

    Registered after ``runtime``'s handler, so it runs before it (atexit is LIFO); stopping the
    boxes again there is a no-op.
    """
    global _exiting
    callbacks = list(_exit_callbacks)
    _exit_callbacks.clear()
    if callbacks and _loop_thread is not None and not _loop_thread.loop.is_closed():
        try:
            future = asyncio.run_coroutine_threadsafe(_run_exit_callbacks(callbacks), _loop_thread.loop)
            future.result(EXIT_CALLBACK_TIMEOUT)
        except Exception:  # pragma: no cover - best effort at exit
            logger.exception("closing boxlite resources at exit failed")
    _runtime._stop_boxes_at_exit()
    with _loop_lock:
        _exiting = True
        if _loop_thread is not None:
            _loop_thread.stop()
