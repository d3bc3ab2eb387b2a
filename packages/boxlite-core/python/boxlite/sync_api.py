"""The synchronous API: ``SyncBoxlite``, ``SyncBox``, ``SyncSimpleBox``, ``SyncCodeBox``.

Every sync call runs its coroutine on one event loop owned by the library, in a daemon thread
started on first use (:func:`run_sync`). The calling thread only blocks on the result, so the
sync API works from plain scripts and threads *and* from code that already runs inside an event
loop (Jupyter cells, FastAPI handlers), where ``asyncio.run`` would fail. At interpreter exit the
boxes are stopped first, then the loop.

    with SyncSimpleBox(rootfs_path=...) as box:
        print(box.exec("echo", "hi").stdout)

The loop itself (``run_sync``, ``run_in_library_loop``, ``at_exit``, fork and exit handling) is
in ``_loop.py``; its functions are re-exported here, where callers have always found them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from typing_extensions import Unpack

from . import runtime as _runtime
from ._loop import EXIT_CALLBACK_TIMEOUT as EXIT_CALLBACK_TIMEOUT
from ._loop import at_exit as at_exit
from ._loop import forget_at_exit as forget_at_exit
from ._loop import in_library_loop as in_library_loop
from ._loop import iterate_sync as iterate_sync
from ._loop import loop as loop
from ._loop import run_in_library_loop as run_in_library_loop
from ._loop import run_sync as run_sync
from .codebox import CodeBox
from .images import GcReport, ImageInfo, Images, PullProgress
from .options import BoxOptions, Options
from .runtime import Box, BoxInfo, Boxlite, BoxMetrics, ExecOutputStream, ExecResult, Execution, RuntimeMetrics
from .simplebox import SimpleBox, SimpleBoxArgs


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
