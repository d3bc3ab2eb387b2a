"""The synchronous API: ``SyncBoxlite``, ``SyncBox``, ``SyncSimpleBox``, ``SyncCodeBox``.

Every sync call runs its coroutine on one event loop owned by the library, in a daemon thread
started on first use (:func:`run_sync`). The calling thread only blocks on the result, so the
sync API works from plain scripts and threads *and* from code that already runs inside an event
loop (Jupyter cells, FastAPI handlers), where ``asyncio.run`` would fail. At interpreter exit the
boxes are stopped first, then the loop.

    with SyncSimpleBox(rootfs_path=...) as box:
        print(box.exec("echo", "hi").stdout)
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from typing_extensions import Unpack

from . import runtime as _runtime
from .codebox import CodeBox
from .images import GcReport, ImageInfo, Images, PullProgress
from .options import BoxOptions, Options
from .runtime import Box, BoxInfo, Boxlite, BoxMetrics, ExecOutputStream, ExecResult, Execution, RuntimeMetrics
from .simplebox import SimpleBox, SimpleBoxArgs

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


class SyncExecStdin:
    """The standard input of a :class:`SyncExecution`."""

    def __init__(self, execution: Execution) -> None:
        self._stdin = execution.stdin()

    def send_input(self, data: bytes | str) -> None:
        """Sends ``data`` to the process (see :meth:`boxlite.runtime.ExecStdin.send_input`)."""
        run_sync(self._stdin.send_input(data))

    write = send_input

    def close(self) -> None:
        """End of input for the process."""
        run_sync(self._stdin.close())


class SyncOutputStream:
    """An output stream of a :class:`SyncExecution`: iterate it for text lines, or use
    :meth:`chunks`, :meth:`readline` and :meth:`read` (see :class:`boxlite.runtime.ExecOutputStream`)."""

    def __init__(self, stream: ExecOutputStream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[str]:
        return iterate_sync(self._stream)

    def chunks(self) -> Iterator[bytes]:
        """Raw output chunks as they arrive."""
        return iterate_sync(self._stream.chunks())

    def readline(self, limit: int = _runtime.DEFAULT_LINE_LIMIT) -> bytes:
        return run_sync(self._stream.readline(limit))

    def readexactly(self, n: int, limit: int = _runtime.DEFAULT_READ_LIMIT) -> bytes:
        return run_sync(self._stream.readexactly(n, limit))

    def read(self, limit: int = _runtime.DEFAULT_READ_LIMIT) -> bytes:
        return run_sync(self._stream.read(limit))


class SyncExecution:
    """A process started with :meth:`SyncBox.exec` (sync :class:`~boxlite.Execution`)."""

    def __init__(self, execution: Execution) -> None:
        self._execution = execution

    @property
    def id(self) -> int:
        return self._execution.id

    @property
    def execution(self) -> Execution:
        """The async execution this wraps."""
        return self._execution

    def wait(self, timeout: float | None = None) -> ExecResult:
        """Waits for the process to end. With ``timeout``, raises ``TimeoutError`` after that
        many seconds and kills every process the execution started."""
        return run_sync(self._execution.wait(), timeout)

    def kill(self) -> None:
        """Kills every process the execution started."""
        run_sync(self._execution.kill())

    def signal(self, signal: int) -> None:
        """Sends ``signal`` to the process group."""
        run_sync(self._execution.signal(signal))

    def stdin(self) -> SyncExecStdin:
        """The process's standard input."""
        return SyncExecStdin(self._execution)

    def stdout(self) -> SyncOutputStream:
        """Standard output as it arrives."""
        return SyncOutputStream(self._execution.stdout())

    def stderr(self) -> SyncOutputStream:
        """Standard error as it arrives."""
        return SyncOutputStream(self._execution.stderr())

    def resize_tty(self, rows: int, cols: int) -> None:
        """Sets the terminal size of a ``tty=True`` execution."""
        run_sync(self._execution.resize_tty(rows, cols))


class SyncBox:
    """A box (sync :class:`~boxlite.Box`)."""

    def __init__(self, box: Box) -> None:
        self._box = box

    @property
    def box(self) -> Box:
        """The async box this wraps."""
        return self._box

    @property
    def id(self) -> str:
        return self._box.id

    @property
    def name(self) -> str | None:
        return self._box.name

    def info(self) -> BoxInfo:
        """A snapshot of the box's state."""
        return self._box.info()

    def exec(
        self,
        cmd: str,
        args: Sequence[str] | str | None = None,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        *,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        tty: bool = False,
        max_output_bytes: int | None = None,
    ) -> SyncExecution:
        """Starts ``cmd`` in the box; ``.wait()`` for the result (see :meth:`Box.exec`)."""
        return SyncExecution(
            run_sync(
                self._box.exec(
                    cmd,
                    args,
                    env,
                    working_dir=working_dir,
                    user=user,
                    timeout=timeout,
                    tty=tty,
                    max_output_bytes=max_output_bytes,
                )
            )
        )

    def run(
        self,
        cmd: str,
        args: Sequence[str] | str | None = None,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        *,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        """Runs ``cmd`` to its end and returns its result (see :meth:`Box.run`)."""
        return run_sync(
            self._box.run(
                cmd, args, env, working_dir=working_dir, user=user, timeout=timeout, max_output_bytes=max_output_bytes
            )
        )

    def metrics(self) -> BoxMetrics:
        """Resource use of the box (see :meth:`Box.metrics`)."""
        return run_sync(self._box.metrics())

    def copy_in(self, host_path: str | os.PathLike[str], guest_path: str) -> None:
        """Copies a host file or directory into the box (see :meth:`Box.copy_in`)."""
        run_sync(self._box.copy_in(host_path, guest_path))

    def copy_out(self, guest_path: str, host_path: str | os.PathLike[str]) -> None:
        """Copies a file or directory out of the box (see :meth:`Box.copy_out`)."""
        run_sync(self._box.copy_out(guest_path, host_path))

    def start(self) -> None:
        """Starts a stopped box again."""
        run_sync(self._box.start())

    def stop(self) -> None:
        """Shuts the guest down; with ``auto_remove`` the box's files are deleted too."""
        run_sync(self._box.stop())

    def __repr__(self) -> str:
        return f"<boxlite.SyncBox id={self.id}>"


class SyncImages:
    """:class:`~boxlite.images.Images` with blocking methods (``SyncBoxlite.images``)."""

    def __init__(self, images: Images) -> None:
        self._images = images

    def pull(self, reference: str, progress: Callable[[PullProgress], None] | None = None) -> ImageInfo:
        """Pulls ``reference`` into the cache (``progress`` is called on the library's loop thread)."""
        return run_sync(self._images.pull(reference, progress))

    def import_archive(self, path: str | os.PathLike[str], reference: str | None = None) -> list[ImageInfo]:
        """Imports a ``docker save`` archive."""
        return run_sync(self._images.import_archive(path, reference))

    def list(self) -> list[ImageInfo]:
        """Every cached image."""
        return run_sync(self._images.list())

    def remove(self, reference: str) -> GcReport:
        """Removes an image and what only it used."""
        return run_sync(self._images.remove(reference))

    def prune(self) -> GcReport:
        """Deletes unreferenced blobs and base disks."""
        return run_sync(self._images.prune())


class SyncBoxlite:
    """The runtime (sync :class:`~boxlite.Boxlite`)."""

    def __init__(self, options: Options | None = None, *, runtime: Boxlite | None = None) -> None:
        self._runtime = runtime if runtime is not None else Boxlite(options)

    @classmethod
    def default(cls) -> SyncBoxlite:
        """The process-wide runtime on the default home directory."""
        return cls(runtime=Boxlite.default())

    @property
    def runtime(self) -> Boxlite:
        """The async runtime this wraps."""
        return self._runtime

    @property
    def home(self) -> Path:
        return self._runtime.home

    @property
    def images(self) -> SyncImages:
        """The image cache: ``pull``, ``import_archive``, ``list``, ``remove``, ``prune``."""
        return SyncImages(self._runtime.images)

    def create(self, options: BoxOptions) -> SyncBox:
        """Creates a box from ``options`` and boots it."""
        return SyncBox(run_sync(self._runtime.create(options)))

    def get(self, id_or_name: str) -> SyncBox:
        """The box with this id or name; :class:`~boxlite.errors.BoxNotFoundError` otherwise."""
        return SyncBox(run_sync(self._runtime.get(id_or_name)))

    def get_info(self, id_or_name: str) -> BoxInfo:
        return run_sync(self._runtime.get_info(id_or_name))

    def list_info(self) -> list[BoxInfo]:
        """Infos of every box of this runtime."""
        return run_sync(self._runtime.list_info())

    def remove(self, id_or_name: str, force: bool = False) -> None:
        """Deletes a box and its files; ``force`` stops a running box first."""
        run_sync(self._runtime.remove(id_or_name, force))

    def accelerator(self) -> dict[str, str]:
        """The accelerator boxes run on (``accel``) and why (``reason``)."""
        return run_sync(self._runtime.accelerator())

    def metrics(self) -> RuntimeMetrics:
        """Totals over this runtime's boxes."""
        return run_sync(self._runtime.metrics())

    def shutdown(self) -> None:
        """Stops every running box of this runtime."""
        run_sync(self._runtime.shutdown())


class SyncSimpleBox:
    """:class:`~boxlite.SimpleBox` with blocking methods: ``with SyncSimpleBox(...) as box:``.

    Takes the same arguments as :class:`~boxlite.SimpleBox`.
    """

    _async_class: type[SimpleBox] = SimpleBox

    def __init__(self, image: str | None = None, **options: Unpack[SimpleBoxArgs]) -> None:
        self._simple = self._async_class(image, **options)

    @property
    def simple_box(self) -> SimpleBox:
        """The async box this wraps."""
        return self._simple

    @property
    def options(self) -> BoxOptions:
        return self._simple.options

    @property
    def box(self) -> SyncBox:
        """The underlying low-level box (once started)."""
        return SyncBox(self._simple.box)

    @property
    def id(self) -> str:
        return self._simple.id

    def start(self) -> SyncSimpleBox:
        """Creates and boots the box (no-op when already started)."""
        run_sync(self._simple.start())
        return self

    def shutdown(self) -> None:
        """Stops the box; with ``auto_remove`` (default) its files are deleted."""
        run_sync(self._simple.shutdown())

    def exec(
        self,
        cmd: str,
        *args: str,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        """Runs ``cmd`` with ``args`` and returns its result (see :meth:`SimpleBox.exec`)."""
        return run_sync(
            self._simple.exec(
                cmd,
                *args,
                env=env,
                working_dir=working_dir,
                user=user,
                timeout=timeout,
                max_output_bytes=max_output_bytes,
            )
        )

    def copy_in(self, host_path: str | os.PathLike[str], guest_path: str) -> None:
        """Copies a host file or directory into the box."""
        run_sync(self._simple.copy_in(host_path, guest_path))

    def copy_out(self, guest_path: str, host_path: str | os.PathLike[str]) -> None:
        """Copies a file or directory out of the box."""
        run_sync(self._simple.copy_out(guest_path, host_path))

    def metrics(self) -> BoxMetrics:
        """Resource use of the box."""
        return run_sync(self._simple.metrics())

    def __enter__(self) -> SyncSimpleBox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


class SyncCodeBox(SyncSimpleBox):
    """:class:`~boxlite.CodeBox` with blocking methods: ``with SyncCodeBox() as box:``.

    Takes the same arguments as :class:`~boxlite.CodeBox` (the image defaults to
    ``BOXLITE_DEFAULT_IMAGE`` or ``python:slim``).
    """

    _async_class = CodeBox

    @property
    def code_box(self) -> CodeBox:
        """The async box this wraps."""
        assert isinstance(self._simple, CodeBox)
        return self._simple

    def start(self) -> SyncCodeBox:
        """Creates and boots the box (no-op when already started)."""
        run_sync(self._simple.start())
        return self

    def __enter__(self) -> SyncCodeBox:
        return self.start()

    def run(self, code: str, timeout: float | None = None) -> str:
        """Runs Python ``code`` in a fresh interpreter; returns its output (see :meth:`CodeBox.run`)."""
        return run_sync(self.code_box.run(code, timeout=timeout))

    def run_script(self, path: str | Path, timeout: float | None = None) -> str:
        """Runs the Python script at the host ``path`` in the box (see :meth:`CodeBox.run_script`)."""
        return run_sync(self.code_box.run_script(path, timeout=timeout))

    def install_package(self, name: str) -> str:
        """``pip install name`` in the box (see :meth:`CodeBox.install_package`)."""
        return run_sync(self.code_box.install_package(name))

    def install_packages(self, *names: str) -> str:
        """``pip install`` several packages at once (see :meth:`CodeBox.install_packages`)."""
        return run_sync(self.code_box.install_packages(*names))


__all__ = [
    "SyncBox",
    "SyncBoxlite",
    "SyncCodeBox",
    "SyncExecution",
    "SyncImages",
    "SyncSimpleBox",
    "iterate_sync",
    "run_sync",
]
