"""The synchronous API: ``SyncBoxlite``, ``SyncBox``, ``SyncSimpleBox``, ``SyncCodeBox``.

Every sync call runs its coroutine on one event loop owned by the library, in a daemon thread
started on first use (:func:`run_sync`). The calling thread only blocks on the result, so the
sync API works from plain scripts and threads *and* from code that already runs inside an event
loop (Jupyter cells, FastAPI handlers), where ``asyncio.run`` would fail. At interpreter exit the
boxes are stopped first, then the loop.

    with SyncSimpleBox(rootfs_path=...) as box:
        print(box.exec("echo", "hi").stdout)

Each blocking method that only runs its async twin is one line, ``run = blocking(Box.run)``
(``_blocking.py`` says how, and why a typed proxy rather than a generated file): a new async
method gets its sync twin by naming it here, and mypy sees the twin's signature. The methods
written out below do more (wrap a result, keep a call synchronous, add ``wait()``'s timeout).

The loop itself (``run_sync``, ``run_in_library_loop``, ``at_exit``, fork and exit handling) is
in ``_loop.py``; its functions are re-exported here, where callers have always found them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from typing_extensions import Unpack

from ._blocking import AsyncProxy, blocking
from ._loop import EXIT_CALLBACK_TIMEOUT as EXIT_CALLBACK_TIMEOUT
from ._loop import at_exit as at_exit
from ._loop import forget_at_exit as forget_at_exit
from ._loop import in_library_loop as in_library_loop
from ._loop import iterate_sync as iterate_sync
from ._loop import loop as loop
from ._loop import run_in_library_loop as run_in_library_loop
from ._loop import run_sync as run_sync
from .codebox import CodeBox
from .images import Images
from .options import BoxOptions, Options
from .runtime import Box, BoxInfo, Boxlite, ExecOutputStream, ExecResult, ExecStdin, Execution
from .simplebox import SimpleBox, SimpleBoxArgs
from .snapshots import Snapshots


class SyncExecStdin(AsyncProxy[ExecStdin]):
    """The standard input of a :class:`SyncExecution`."""

    def __init__(self, execution: Execution) -> None:
        super().__init__(execution.stdin())

    send_input = blocking(ExecStdin.send_input)
    write = send_input
    close = blocking(ExecStdin.close)


class SyncOutputStream(AsyncProxy[ExecOutputStream]):
    """An output stream of a :class:`SyncExecution`: iterate it for text lines, or use
    :meth:`chunks`, :meth:`readline` and :meth:`read` (see :class:`boxlite.runtime.ExecOutputStream`)."""

    def __init__(self, stream: ExecOutputStream) -> None:
        super().__init__(stream)

    def __iter__(self) -> Iterator[str]:
        return iterate_sync(self._target)

    def chunks(self) -> Iterator[bytes]:
        """Raw output chunks as they arrive."""
        return iterate_sync(self._target.chunks())

    readline = blocking(ExecOutputStream.readline)
    readexactly = blocking(ExecOutputStream.readexactly)
    read = blocking(ExecOutputStream.read)


class SyncExecution(AsyncProxy[Execution]):
    """A process started with :meth:`SyncBox.exec` (sync :class:`~boxlite.Execution`)."""

    def __init__(self, execution: Execution) -> None:
        super().__init__(execution)

    @property
    def id(self) -> int:
        return self._target.id

    @property
    def execution(self) -> Execution:
        """The async execution this wraps."""
        return self._target

    def wait(self, timeout: float | None = None) -> ExecResult:
        """Waits for the process to end. With ``timeout``, raises ``TimeoutError`` after that
        many seconds and kills every process the execution started."""
        return run_sync(self._target.wait(), timeout)

    def set_deadline(self, seconds: float | None) -> bool:
        """Sets the execution's timeout from now (see :meth:`Execution.set_deadline`).

        Not a :func:`blocking` twin: the async method is not a coroutine (it only hands the
        deadline to the engine), so the sync class calls it directly."""
        return self._target.set_deadline(seconds)

    kill = blocking(Execution.kill)
    signal = blocking(Execution.signal)

    def stdin(self) -> SyncExecStdin:
        """The process's standard input."""
        return SyncExecStdin(self._target)

    def stdout(self) -> SyncOutputStream:
        """Standard output as it arrives."""
        return SyncOutputStream(self._target.stdout())

    def stderr(self) -> SyncOutputStream:
        """Standard error as it arrives."""
        return SyncOutputStream(self._target.stderr())

    resize_tty = blocking(Execution.resize_tty)


class SyncBox(AsyncProxy[Box]):
    """A box (sync :class:`~boxlite.Box`)."""

    def __init__(self, box: Box) -> None:
        super().__init__(box)

    @property
    def box(self) -> Box:
        """The async box this wraps."""
        return self._target

    @property
    def id(self) -> str:
        return self._target.id

    @property
    def name(self) -> str | None:
        return self._target.name

    def info(self) -> BoxInfo:
        """A snapshot of the box's state."""
        return self._target.info()

    exec = blocking(Box.exec, SyncExecution)
    run = blocking(Box.run)
    metrics = blocking(Box.metrics)
    copy_in = blocking(Box.copy_in)
    copy_out = blocking(Box.copy_out)
    read_file = blocking(Box.read_file)
    read_text = blocking(Box.read_text)
    write_file = blocking(Box.write_file)
    list_dir = blocking(Box.list_dir)
    stat = blocking(Box.stat)
    exists = blocking(Box.exists)
    start = blocking(Box.start)
    stop = blocking(Box.stop)
    pause = blocking(Box.pause)
    resume = blocking(Box.resume)
    snapshot = blocking(Box.snapshot)

    def __repr__(self) -> str:
        return f"<boxlite.SyncBox id={self.id}>"


class SyncImages(AsyncProxy[Images]):
    """:class:`~boxlite.images.Images` with blocking methods (``SyncBoxlite.images``)."""

    def __init__(self, images: Images) -> None:
        super().__init__(images)

    pull = blocking(Images.pull)
    import_archive = blocking(Images.import_archive)
    list = blocking(Images.list)
    remove = blocking(Images.remove)
    prune = blocking(Images.prune)


class SyncBoxlite(AsyncProxy[Boxlite]):
    """The runtime (sync :class:`~boxlite.Boxlite`)."""

    def __init__(self, options: Options | None = None, *, runtime: Boxlite | None = None) -> None:
        super().__init__(runtime if runtime is not None else Boxlite(options))

    @classmethod
    def default(cls) -> SyncBoxlite:
        """The process-wide runtime on the default home directory."""
        return cls(runtime=Boxlite.default())

    @property
    def runtime(self) -> Boxlite:
        """The async runtime this wraps."""
        return self._target

    @property
    def home(self) -> Path:
        return self._target.home

    @property
    def snapshots(self) -> Snapshots:
        """The snapshots of this home (``list``, ``get``, ``remove``; already blocking)."""
        return self._target.snapshots

    @property
    def images(self) -> SyncImages:
        """The image cache: ``pull``, ``import_archive``, ``list``, ``remove``, ``prune``."""
        return SyncImages(self._target.images)

    create = blocking(Boxlite.create, SyncBox)
    restore = blocking(Boxlite.restore, SyncBox)
    get = blocking(Boxlite.get, SyncBox)
    get_info = blocking(Boxlite.get_info)
    list_info = blocking(Boxlite.list_info)
    remove = blocking(Boxlite.remove)
    accelerator = blocking(Boxlite.accelerator)
    metrics = blocking(Boxlite.metrics)
    shutdown = blocking(Boxlite.shutdown)


class SyncSimpleBox(AsyncProxy[SimpleBox]):
    """:class:`~boxlite.SimpleBox` with blocking methods: ``with SyncSimpleBox(...) as box:``.

    Takes the same arguments as :class:`~boxlite.SimpleBox`.
    """

    _async_class: type[SimpleBox] = SimpleBox

    def __init__(self, image: str | None = None, **options: Unpack[SimpleBoxArgs]) -> None:
        super().__init__(self._async_class(image, **options))

    @property
    def simple_box(self) -> SimpleBox:
        """The async box this wraps."""
        return self._target

    @property
    def options(self) -> BoxOptions:
        return self._target.options

    @property
    def box(self) -> SyncBox:
        """The underlying low-level box (once started)."""
        return SyncBox(self._target.box)

    @property
    def id(self) -> str:
        return self._target.id

    def start(self) -> SyncSimpleBox:
        """Creates and boots the box (no-op when already started)."""
        run_sync(self._target.start())
        return self

    shutdown = blocking(SimpleBox.shutdown)
    exec = blocking(SimpleBox.exec)
    copy_in = blocking(SimpleBox.copy_in)
    copy_out = blocking(SimpleBox.copy_out)
    read_file = blocking(SimpleBox.read_file)
    write_file = blocking(SimpleBox.write_file)
    list_dir = blocking(SimpleBox.list_dir)
    stat = blocking(SimpleBox.stat)
    metrics = blocking(SimpleBox.metrics)
    pause = blocking(SimpleBox.pause)
    resume = blocking(SimpleBox.resume)
    snapshot = blocking(SimpleBox.snapshot)

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
        assert isinstance(self._target, CodeBox)
        return self._target

    def start(self) -> SyncCodeBox:
        """Creates and boots the box (no-op when already started)."""
        run_sync(self._target.start())
        return self

    def __enter__(self) -> SyncCodeBox:
        return self.start()

    run = blocking(CodeBox.run)
    run_script = blocking(CodeBox.run_script)
    install_package = blocking(CodeBox.install_package)
    install_packages = blocking(CodeBox.install_packages)


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
