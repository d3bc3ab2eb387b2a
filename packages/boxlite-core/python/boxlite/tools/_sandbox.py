"""The sandboxes tools run in: :class:`BoxSandbox` (one box) and :class:`ToolSandbox` (what a set
of tools shares: one box started on first use, a box given to it, or a pool lease per call).

:class:`BoxSandbox` adds shell commands and file operations to the warm Python session of
``_session.py``; ``create_tool_pool`` (``_tool_pool.py``) fills a pool with ready ones.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from .._blocking import blocking
from ..codebox import default_image
from ..errors import BoxliteError
from ..options import BoxOptions
from ..pool import LeasingPool
from ..runtime import Box, Boxlite, ExecResult
from ..sync_api import run_in_library_loop
from ._session import DEFAULT_OUTPUT_DIR, DEFAULT_TIMEOUT, ToolSandboxError, _check_limits, _InterpreterSession
from .result import DEFAULT_MAX_OUTPUT_CHARS, FileEntry, ToolResult, format_listing, truncate_output
from .schemas import call_timeout

T = TypeVar("T")

#: Bytes a file tool reads at most; a larger file is refused (the model sees why).
MAX_READ_BYTES = 16 * 1024 * 1024


def resolve_image(image: str | os.PathLike[str] | None = None) -> str:
    """The image tools boot: ``image`` if given, else :func:`boxlite.codebox.default_image`
    (``BOXLITE_DEFAULT_IMAGE`` or ``python:slim``). A reference or an OCI image layout path."""
    return os.fspath(image) if image is not None else default_image()


class BoxSandbox(_InterpreterSession):
    """Python, shell and file operations in one box, as agent tools need them.

    ``persistent=True`` keeps one interpreter (one namespace) for every :meth:`run_python`
    call; otherwise each call runs in a fresh child forked from a pre-started interpreter.
    A call that times out kills every process it started; a persistent interpreter is then
    started anew (its variables are gone, and the result says so).
    """

    # The constructor, start, is_healthy, run_python and close are the warm interpreter's:
    # see _InterpreterSession in _session.py.

    # -- shell and files ------------------------------------------------------------------

    async def run_shell(self, command: str, timeout: float | None = None) -> ToolResult:
        """Runs ``command`` with ``sh -c``; on timeout every process it started is killed."""
        seconds = self._timeout(timeout)
        result = await self.box.run("sh", ["-c", command], self._env, timeout=seconds)
        return self._shell_result(result, seconds)

    def _shell_result(self, result: ExecResult, seconds: float) -> ToolResult:
        return ToolResult(
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            timeout=seconds,
            note=result.error,
            # Output beyond the box's max_output_bytes never reached the host: it counts as dropped.
            **self._cap(
                result.stdout,
                result.stderr,
                out_total=len(result.stdout) + result.stdout_dropped,
                err_total=len(result.stderr) + result.stderr_dropped,
            ),
        )

    async def read_file(self, path: str) -> bytes:
        """The content of ``path`` in the box (at most :data:`MAX_READ_BYTES`); the
        :class:`OSError` subclass that says why otherwise (``FileNotFoundError``...)."""
        return await self.box.read_file(path, max_bytes=MAX_READ_BYTES)

    async def read_text(self, path: str) -> str:
        """``path`` as text, capped like other output (a binary file is described, not dumped)."""
        data = await self.read_file(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return f"{path} is a binary file of {len(data)} bytes (not shown)"
        return truncate_output(text, self.max_output_chars)[0]

    async def write_file(self, path: str, content: str | bytes) -> int:
        """Writes ``content`` to ``path`` (parent directories are created); returns the byte count."""
        data = content.encode() if isinstance(content, str) else content
        await self.box.write_file(path, data, parents=True)
        return len(data)

    async def list_files(self, path: str = ".") -> list[FileEntry]:
        """The entries of directory ``path``, sorted by name; :class:`FileNotFoundError` or
        :class:`NotADirectoryError` otherwise."""
        return [FileEntry(name=i.name, kind=i.kind, size=i.size) for i in await self.box.list_dir(path)]


def _box_options(
    image: str | os.PathLike[str] | None, options: BoxOptions | None, memory_mib: int, cpus: int
) -> BoxOptions:
    """``options`` (when given: security, network, volumes…) with the image filled in, or
    options made from ``image``, ``memory_mib`` and ``cpus``."""
    if options is None:
        return BoxOptions(memory_mib=memory_mib, cpus=cpus, image=resolve_image(image))
    if image is not None or (options.image is None and options.rootfs_path is None):
        return options.model_copy(update={"image": resolve_image(image), "rootfs_path": None})
    return options


class ToolSandbox:
    """The box (or pool of boxes) a set of tools shares.

    * default: one box, created from ``image`` on first use and kept until :meth:`close`
      (or interpreter exit); ``persistent=True`` keeps Python variables between calls;
      ``options`` (a :class:`~boxlite.BoxOptions`) sets anything else about the box
      (security, network, …), ``memory_mib`` and ``cpus`` then being ignored;
    * ``box=``: tools run in a box you created (you stop it);
    * ``pool=``: every call leases a box from a :class:`~boxlite.pool.BoxPool` or a cluster's
      :class:`~boxlite.ray.RayBoxPool` (any :class:`~boxlite.pool.LeasingPool`; see
      :func:`create_tool_pool`, which keeps a warm interpreter in every pooled box), so
      concurrent agents never share a box and each call starts from a fresh box.

    Every operation exists as a coroutine and as a blocking ``*_sync`` method that is safe to
    call from inside a running event loop.
    """

    def __init__(
        self,
        image: str | os.PathLike[str] | None = None,
        *,
        pool: LeasingPool | None = None,
        box: Box | None = None,
        persistent: bool = False,
        runtime: Boxlite | None = None,
        memory_mib: int = 1024,
        cpus: int = 1,
        env: Mapping[str, str] | None = None,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_TIMEOUT,
        output_dir: str = DEFAULT_OUTPUT_DIR,
        options: BoxOptions | None = None,
    ) -> None:
        _check_limits(max_output_chars, default_timeout)
        if pool is not None and box is not None:
            raise ValueError("pass either pool= or box=, not both")
        if pool is not None and persistent:
            raise ValueError(
                "persistent=True needs one box kept for the whole session, but pool= leases a box per call: "
                "drop pool= (the toolkit then keeps one box), or create the pool with create_tool_pool(persistent=True)"
            )
        self._options = _box_options(image, options, memory_mib, cpus) if box is None else None
        self._pool = pool
        self._runtime = runtime
        self.default_timeout = default_timeout
        self._sandbox_kwargs: dict[str, Any] = {
            "persistent": persistent,
            "max_output_chars": max_output_chars,
            "default_timeout": default_timeout,
            "output_dir": output_dir,
            "env": dict(env or {}),
        }
        self._box = box
        self._owns_box = box is None
        self._shared: BoxSandbox | None = BoxSandbox(box, **self._sandbox_kwargs) if box is not None else None
        self._start_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def given_or_new(
        cls,
        sandbox: ToolSandbox | None,
        image: str | os.PathLike[str] | None = None,
        *,
        pool: LeasingPool | None = None,
        persistent: bool = False,
        memory_mib: int = 1024,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> ToolSandbox:
        """What an adapter's tool runs on: ``sandbox`` when given (shared with other tools),
        else a new one from the other arguments; both at once is an error."""
        if sandbox is not None:
            if image is not None or pool is not None or persistent:
                raise ValueError("pass either sandbox= or image=/pool=/persistent=, not both")
            return sandbox
        return cls(
            image,
            pool=pool,
            persistent=persistent,
            memory_mib=memory_mib,
            max_output_chars=max_output_chars,
            default_timeout=default_timeout,
        )

    @property
    def options(self) -> BoxOptions | None:
        """The options of the box this sandbox creates (None when given a box)."""
        return self._options

    @property
    def pool(self) -> LeasingPool | None:
        return self._pool

    @property
    def persistent(self) -> bool:
        """Whether Python variables survive between calls (one session in the shared box)."""
        return bool(self._sandbox_kwargs["persistent"])

    @asynccontextmanager
    async def session(self) -> AsyncIterator[BoxSandbox]:
        """The :class:`BoxSandbox` one call runs in: the shared one, or a pool lease's."""
        if self._closed:
            raise ToolSandboxError("this tool sandbox is closed: create a new one")
        if self._pool is None:
            yield await self._shared_sandbox()
            return
        async with self._pool.lease() as lease:
            # A pool from create_tool_pool() prepared a warm sandbox in each box; for any other
            # pool, this call gets a sandbox of its own, whose interpreter goes with the lease.
            prepared = lease.resource if isinstance(lease.resource, BoxSandbox) else None
            sandbox = prepared or BoxSandbox(lease.box, **self._sandbox_kwargs)
            try:
                yield sandbox
            except BaseException:
                lease.mark_broken()
                raise
            finally:
                if prepared is None:
                    await sandbox.close()
            if prepared is not None and not prepared.interpreter_running:
                # Its interpreter died or timed out: no later lease may get this box.
                lease.mark_broken()

    async def _shared_sandbox(self) -> BoxSandbox:
        if self._shared is not None:
            return self._shared
        async with self._start_lock:
            if self._shared is None:
                assert self._options is not None
                runtime = self._runtime or Boxlite.default()
                self._box = await runtime.create(self._options)
                self._shared = BoxSandbox(self._box, **self._sandbox_kwargs)
            return self._shared

    async def _call(self, operation: Callable[[BoxSandbox], Awaitable[T]]) -> T:
        return await run_in_library_loop(self._call_here(operation))

    async def _call_here(self, operation: Callable[[BoxSandbox], Awaitable[T]]) -> T:
        try:
            async with self.session() as sandbox:
                return await operation(sandbox)
        except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError):
            raise
        except BoxliteError:
            raise
        except OSError as e:
            raise ToolSandboxError(f"the sandbox failed: {e}") from e

    async def run_python(self, code: str, timeout: float | None = None) -> ToolResult:
        """See :meth:`BoxSandbox.run_python`."""
        seconds = call_timeout(timeout, self.default_timeout)  # before a lease: a bad argument costs no box
        return await self._call(lambda s: s.run_python(code, seconds))

    async def run_shell(self, command: str, timeout: float | None = None) -> ToolResult:
        """See :meth:`BoxSandbox.run_shell`."""
        seconds = call_timeout(timeout, self.default_timeout)
        return await self._call(lambda s: s.run_shell(command, seconds))

    async def read_file(self, path: str) -> bytes:
        return await self._call(lambda s: s.read_file(path))

    async def read_text(self, path: str) -> str:
        return await self._call(lambda s: s.read_text(path))

    async def write_file(self, path: str, content: str | bytes) -> int:
        return await self._call(lambda s: s.write_file(path, content))

    async def list_files(self, path: str = ".") -> list[FileEntry]:
        return await self._call(lambda s: s.list_files(path))

    # What file tools show the model: a missing file or a bad path is the model's mistake, so
    # it is reported as ordinary output, not raised.

    async def read_file_report(self, path: str) -> str:
        """The file's text (capped), or why it cannot be read."""
        try:
            return await self.read_text(path)
        except OSError as e:
            return f"error: {e}"

    async def write_file_report(self, path: str, content: str) -> str:
        """Writes the file; says how much was written, or why it could not be."""
        try:
            written = await self.write_file(path, content)
        except OSError as e:
            return f"error: {e}"
        return f"wrote {written} bytes to {path}"

    async def list_files_report(self, path: str = ".") -> str:
        """The directory listing, or why it cannot be listed."""
        try:
            return format_listing(path, await self.list_files(path))
        except OSError as e:
            return f"error: {e}"

    read_file_report_sync = blocking(read_file_report)
    write_file_report_sync = blocking(write_file_report)
    list_files_report_sync = blocking(list_files_report)
    run_python_sync = blocking(run_python)
    run_shell_sync = blocking(run_shell)
    read_file_sync = blocking(read_file)
    read_text_sync = blocking(read_text)
    write_file_sync = blocking(write_file)
    list_files_sync = blocking(list_files)

    async def close(self) -> None:
        """Stops the shared interpreter and, if this sandbox created it, the box. A pool is
        left to its owner."""
        await run_in_library_loop(self._close_here())

    async def _close_here(self) -> None:
        self._closed = True
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.close()
            if self._owns_box:
                await shared.box.stop()

    close_sync = blocking(close)
