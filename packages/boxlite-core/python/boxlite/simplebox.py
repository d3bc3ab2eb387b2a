"""``SimpleBox``: a box as an async context manager, with ``exec(cmd, *args)``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import TypedDict

from typing_extensions import Unpack

from ._runtime.files import DEFAULT_READ_MAX_BYTES, FileInfo
from .errors import BoxStoppedError
from .options import BoxOptions, SecurityOptions
from .runtime import Box, Boxlite, BoxMetrics, ExecResult
from .snapshots import SnapshotInfo


class SimpleBoxArgs(TypedDict, total=False):
    """Keyword arguments of :class:`SimpleBox` and the boxes built on it (see
    :class:`~boxlite.BoxOptions` for their meaning)."""

    rootfs_path: str | None
    cpus: int | None
    memory_mib: int | None
    working_dir: str | None
    env: Mapping[str, str] | list[tuple[str, str]] | None
    name: str | None
    auto_remove: bool
    disk_size_gb: int | None
    #: The runtime to create the box in (default: :meth:`Boxlite.default`).
    runtime: Boxlite | None
    #: Aliases of ``cpus`` and ``memory_mib``.
    cpu: int | None
    memory: int | None
    security: SecurityOptions | None
    ports: list[tuple[int, int] | tuple[int, int, str]] | None
    volumes: list[tuple[str, str] | tuple[str, str, str]] | None
    max_output_bytes: int | None


class SimpleBox:
    """A box you pick the image of and run commands in.

    ``async with SimpleBox(rootfs_path=...) as box: result = await box.exec("echo", "hi")``,
    or ``await box.start()`` … ``await box.shutdown()``.

    ``cpu`` and ``memory`` are accepted as aliases of ``cpus`` and ``memory_mib``.
    """

    def __init__(self, image: str | None = None, **options: Unpack[SimpleBoxArgs]) -> None:
        unknown = sorted(set(options) - set(SimpleBoxArgs.__annotations__))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments: {', '.join(unknown)}")
        fields: dict[str, object] = {"image": image, "auto_remove": options.get("auto_remove", True)}
        for key in (
            "rootfs_path",
            "working_dir",
            "env",
            "name",
            "disk_size_gb",
            "security",
            "ports",
            "volumes",
            "max_output_bytes",
        ):
            if options.get(key) is not None:
                fields[key] = options[key]
        cpus = options.get("cpus")
        memory_mib = options.get("memory_mib")
        cpus = cpus if cpus is not None else options.get("cpu")
        memory_mib = memory_mib if memory_mib is not None else options.get("memory")
        if cpus is not None:
            fields["cpus"] = cpus
        if memory_mib is not None:
            fields["memory_mib"] = memory_mib
        self._options = BoxOptions.model_validate(fields)
        self._runtime = options.get("runtime")
        self._box: Box | None = None

    @property
    def options(self) -> BoxOptions:
        return self._options

    @property
    def box(self) -> Box:
        """The underlying low-level :class:`~boxlite.Box` (once started)."""
        if self._box is None:
            raise BoxStoppedError("the box is not started: use `async with` or `await box.start()` first")
        return self._box

    @property
    def id(self) -> str:
        return self.box.id

    async def start(self) -> SimpleBox:
        """Creates and boots the box (no-op when already started)."""
        if self._box is None:
            runtime = self._runtime or Boxlite.default()
            self._box = await runtime.create(self._options)
        return self

    async def shutdown(self) -> None:
        """Stops the box; with ``auto_remove`` (default) its files are deleted."""
        if self._box is not None:
            box, self._box = self._box, None
            await box.stop()

    async def exec(
        self,
        cmd: str,
        *args: str,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        """Runs ``cmd`` with ``args`` and returns its result (exit code, stdout, stderr).

        With ``timeout`` (seconds), every process the command started is killed once it runs
        longer, and the result has ``timed_out=True``, exit code 124 and the output so far.
        Each stream keeps at most ``max_output_bytes`` (default: the box's, 4 MiB); beyond it
        the output is dropped and the result has ``truncated=True``.
        """
        return await self.box.run(
            cmd,
            list(args),
            env,
            working_dir=working_dir,
            user=user,
            timeout=timeout,
            max_output_bytes=max_output_bytes,
        )

    async def copy_in(self, host_path: str | os.PathLike[str], guest_path: str) -> None:
        """Copies a host file or directory into the box (see :meth:`boxlite.Box.copy_in`)."""
        await self.box.copy_in(host_path, guest_path)

    async def copy_out(self, guest_path: str, host_path: str | os.PathLike[str]) -> None:
        """Copies a file or directory out of the box (see :meth:`boxlite.Box.copy_out`)."""
        await self.box.copy_out(guest_path, host_path)

    async def read_file(
        self, path: str, *, offset: int = 0, length: int | None = None, max_bytes: int = DEFAULT_READ_MAX_BYTES
    ) -> bytes:
        """The content of a file in the box (see :meth:`boxlite.Box.read_file`)."""
        return await self.box.read_file(path, offset=offset, length=length, max_bytes=max_bytes)

    async def write_file(
        self, path: str, data: bytes | str, *, mode: int = 0o644, parents: bool = False, exclusive: bool = False
    ) -> None:
        """Writes a file in the box (see :meth:`boxlite.Box.write_file`)."""
        await self.box.write_file(path, data, mode=mode, parents=parents, exclusive=exclusive)

    async def list_dir(self, path: str = ".") -> list[FileInfo]:
        """The entries of a directory in the box (see :meth:`boxlite.Box.list_dir`)."""
        return await self.box.list_dir(path)

    async def stat(self, path: str, *, follow_symlinks: bool = True) -> FileInfo:
        """What a path in the box is (see :meth:`boxlite.Box.stat`)."""
        return await self.box.stat(path, follow_symlinks=follow_symlinks)

    async def metrics(self) -> BoxMetrics:
        """Resource use of the box (see :meth:`boxlite.Box.metrics`)."""
        return await self.box.metrics()

    async def pause(self) -> None:
        """Freezes the box's VM (see :meth:`boxlite.Box.pause`)."""
        await self.box.pause()

    async def resume(self) -> None:
        """Runs the paused box again (see :meth:`boxlite.Box.resume`)."""
        await self.box.resume()

    async def snapshot(self, name: str | None = None) -> SnapshotInfo:
        """Saves the box's whole state as a snapshot (see :meth:`boxlite.Box.snapshot`)."""
        return await self.box.snapshot(name)

    async def __aenter__(self) -> SimpleBox:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
