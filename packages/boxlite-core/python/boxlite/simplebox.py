"""``SimpleBox``: a box as an async context manager, with ``exec(cmd, *args)``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Literal, TypedDict, overload

from typing_extensions import Unpack

from ._runtime.files import DEFAULT_READ_MAX_BYTES, FileInfo
from .errors import BoxStoppedError, InvalidOptionError
from .options import BoxOptions, SecurityOptions
from .runtime import Box, Boxlite, BoxMetrics, ExecResult, Execution
from .snapshots import SnapshotInfo


class BoxArgs(TypedDict, total=False):
    """The box keywords every box class takes (see :class:`~boxlite.BoxOptions` for their
    meaning); :class:`SimpleBoxArgs`, ``BrowserBoxArgs`` and ``ComputerBoxArgs`` add those
    that are not parameters of their own.

    The spellings of upstream BoxLite's documentation are accepted as aliases, in its units:
    ``cpu`` for ``cpus``, ``memory`` (MiB) for ``memory_mib``, ``disk_size`` (MB, rounded up
    to whole GB) for ``disk_size_gb``, and ``mounts`` for ``volumes``. Giving an option under
    both of its names is a ``TypeError``.
    """

    rootfs_path: str | None
    cpus: int | None
    memory_mib: int | None
    working_dir: str | None
    env: Mapping[str, str] | list[tuple[str, str]] | None
    name: str | None
    auto_remove: bool
    disk_size_gb: int | None
    security: SecurityOptions | None
    ports: list[tuple[int, int] | tuple[int, int, str]] | None
    volumes: list[tuple[str, str] | tuple[str, str, str]] | None
    max_output_bytes: int | None
    #: Alias of ``disk_size_gb`` in MB (1024 MB to the GB), rounded up to whole GB.
    disk_size: int | None
    #: Alias of ``volumes``: ``(host_dir, guest_path)`` or ``(host_dir, guest_path, "ro"|"rw")``.
    mounts: list[tuple[str, str] | tuple[str, str, str]] | None


class SizedBoxArgs(BoxArgs, total=False):
    """:class:`BoxArgs` and upstream's aliases of the VM's size (``BrowserBox``'s keywords)."""

    #: Alias of ``cpus``.
    cpu: int | None
    #: Alias of ``memory_mib`` (MiB).
    memory: int | None


class SimpleBoxArgs(SizedBoxArgs, total=False):
    """Keyword arguments of :class:`SimpleBox` (and :class:`~boxlite.CodeBox`,
    :class:`~boxlite.InteractiveBox`): :class:`BoxArgs`, the size aliases and ``runtime``."""

    #: The runtime to create the box in (default: :meth:`Boxlite.default`).
    runtime: Boxlite | None


#: Each alias ``SimpleBox`` accepts and the option it stands for.
OPTION_ALIASES: dict[str, str] = {
    "cpu": "cpus",
    "memory": "memory_mib",
    "disk_size": "disk_size_gb",
    "mounts": "volumes",
}

#: Keyword arguments that are not box options.
_NOT_BOX_OPTIONS = frozenset({"runtime"})


def _mb_to_gb(disk_size: object) -> int:
    if isinstance(disk_size, bool) or not isinstance(disk_size, int) or disk_size < 1:
        raise InvalidOptionError(
            f"disk_size={disk_size!r}: the disk size in MB must be a positive integer (or give disk_size_gb in GB)"
        )
    return -(-disk_size // 1024)


def box_options(owner: str, image: str | None, args: Mapping[str, object]) -> BoxOptions:
    """The :class:`BoxOptions` of a ``SimpleBox`` (or subclass) called ``owner`` made with
    ``image`` and the keyword arguments ``args`` (:class:`SimpleBoxArgs`), aliases resolved.

    Raises:
        TypeError: an unknown keyword, or one option given under both of its names.
        InvalidOptionError: ``disk_size`` is not a positive integer.
    """
    unknown = sorted(set(args) - SimpleBoxArgs.__optional_keys__)
    if unknown:
        raise TypeError(f"{owner}() got unexpected keyword arguments: {', '.join(unknown)}")
    fields: dict[str, object] = {}
    spelled: dict[str, str] = {}
    for key, value in args.items():
        if key in _NOT_BOX_OPTIONS or value is None:
            continue
        target = OPTION_ALIASES.get(key, key)
        if target in spelled:
            alias = key if key != target else spelled[target]
            raise TypeError(
                f"{owner}() got both {spelled[target]}= and {key}=, two names of one option "
                f"({alias} is an alias of {target}): pass only one"
            )
        spelled[target] = key
        fields[target] = _mb_to_gb(value) if key == "disk_size" else value
    fields["image"] = image
    fields.setdefault("auto_remove", True)
    return BoxOptions.model_validate(fields)


class SimpleBox:
    """A box you pick the image of and run commands in.

    ``async with SimpleBox(rootfs_path=...) as box: result = await box.exec("echo", "hi")``,
    or ``await box.start()`` … ``await box.shutdown()``.

    Upstream BoxLite's spellings are accepted as aliases: ``cpu`` (``cpus``), ``memory`` (MiB,
    ``memory_mib``), ``disk_size`` (MB, ``disk_size_gb``) and ``mounts`` (``volumes``); see
    :class:`SimpleBoxArgs`.
    """

    def __init__(self, image: str | None = None, **options: Unpack[SimpleBoxArgs]) -> None:
        self._options = box_options(type(self).__name__, image, options)
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

    @overload
    async def exec(
        self,
        cmd: str,
        *args: str,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
        background: Literal[False] = False,
    ) -> ExecResult: ...

    @overload
    async def exec(
        self,
        cmd: str,
        *args: str,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
        background: Literal[True],
    ) -> Execution: ...

    async def exec(
        self,
        cmd: str,
        *args: str,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
        background: bool = False,
    ) -> ExecResult | Execution:
        """Runs ``cmd`` with ``args`` and returns its result (exit code, stdout, stderr).

        With ``timeout`` (seconds), every process the command started is killed once it runs
        longer, and the result has ``timed_out=True``, exit code 124 and the output so far.
        Each stream keeps at most ``max_output_bytes`` (default: the box's, 4 MiB); beyond it
        the output is dropped and the result has ``truncated=True``.

        ``background=True`` starts the command and returns at once with its running
        :class:`~boxlite.Execution` (``await execution.wait()`` or ``kill()`` it later), as
        for a server: ``await box.exec("python", "-m", "http.server", "80", background=True)``.
        The process runs until it ends, is killed, or the box stops; dropping the handle does
        not stop it. While you hold the handle, its output waits for you to read it
        (``stdout()``, ``wait()``) and a process that writes more than 1 MiB unread waits too;
        once the handle is dropped its output is discarded.
        """
        if background:
            return await self.box.exec(
                cmd,
                list(args),
                env,
                working_dir=working_dir,
                user=user,
                timeout=timeout,
                max_output_bytes=max_output_bytes,
            )
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

    async def fork(self, count: int = 1) -> list[SimpleBox]:
        """New started boxes that continue from this one's current state (see
        :meth:`boxlite.Box.fork`), each a :class:`SimpleBox` to shut down like any other."""
        forks = await self.box.fork(count)
        options = self._options.model_copy(update={"name": None, "ports": []})
        return [SimpleBox._of_box(box, options, self._runtime) for box in forks]

    @staticmethod
    def _of_box(box: Box, options: BoxOptions, runtime: Boxlite | None) -> SimpleBox:
        """A started :class:`SimpleBox` around the running ``box`` made with ``options``."""
        simple = object.__new__(SimpleBox)
        simple._options, simple._runtime, simple._box = options, runtime, box
        return simple

    async def __aenter__(self) -> SimpleBox:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
