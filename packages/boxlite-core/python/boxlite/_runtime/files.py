"""File operations on a box (``read_file``, ``write_file``, ``list_dir``, ``stat``): each one
is an agent builtin run in the box (no shell, no program of the image, no file content in argv),
so they work on any image, even one without ``cat`` or ``sh``. :class:`FileOps` is mixed into
:class:`~boxlite.Box`; failures raise the :class:`~boxlite.errors.BoxFileError` subclass of the
matching :class:`OSError` (``FileNotFoundError``, ``IsADirectoryError``...)."""

from __future__ import annotations

import json
import stat as _stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .. import _bridge
from ..errors import InvalidOptionError

if TYPE_CHECKING:
    from .. import _engine

#: Bytes :meth:`FileOps.read_file` returns at most unless told otherwise; a larger file is
#: refused (:class:`~boxlite.errors.BoxFileTooLargeError`) before any of it is sent.
DEFAULT_READ_MAX_BYTES = 64 * 1024 * 1024

FileKind = Literal["file", "directory", "symlink", "other"]


@dataclass(frozen=True)
class FileInfo:
    """One file in a box, as :meth:`FileOps.stat` and :meth:`FileOps.list_dir` describe it."""

    name: str
    """The entry's name (the path's last component for ``stat``)."""
    kind: FileKind
    size: int
    """Bytes (of the link itself for a symlink)."""
    mode: int
    """Permission bits with the set-id and sticky bits (``st_mode & 0o7777``)."""
    uid: int
    gid: int
    mtime_ns: int
    """Last modification, nanoseconds since the epoch."""
    link_target: str | None = None
    """Where a symlink points; ``None`` for anything else."""

    @property
    def mtime(self) -> float:
        """Last modification, seconds since the epoch."""
        return self.mtime_ns / 1e9

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def is_dir(self) -> bool:
        return self.kind == "directory"

    @property
    def is_symlink(self) -> bool:
        return self.kind == "symlink"

    @property
    def filemode(self) -> str:
        """``ls -l``-style mode string, e.g. ``-rw-r--r--``."""
        kind_bits = {"file": _stat.S_IFREG, "directory": _stat.S_IFDIR, "symlink": _stat.S_IFLNK}
        return _stat.filemode(kind_bits.get(self.kind, 0) | self.mode)

    @classmethod
    def _from_engine(cls, data: dict[str, Any]) -> FileInfo:
        return cls(**data)


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path:
        raise InvalidOptionError(f"path {path!r} must be a non-empty string")
    return path


class FileOps:
    """The file operations of a running box; paths are in the box (a relative one starts at
    the box's working directory), and every operation runs as the image's user."""

    _inner: _engine.Box

    async def read_file(
        self,
        path: str,
        *,
        offset: int = 0,
        length: int | None = None,
        max_bytes: int = DEFAULT_READ_MAX_BYTES,
    ) -> bytes:
        """The content of the regular file ``path`` from byte ``offset``: at most ``length``
        bytes when given (like ``head -c``), else all of the rest. A rest of more than
        ``max_bytes`` is refused (:class:`~boxlite.errors.BoxFileTooLargeError`) rather than
        read in part; a ``length`` above ``max_bytes`` is cut to it."""
        _check_path(path)
        for name, value in (("offset", offset), ("max_bytes", max_bytes), ("length", length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidOptionError(f"{name}={value!r} must be a non-negative number of bytes")
        data: bytes = await _bridge.call(lambda c: self._inner.read_file(c, path, offset, length, max_bytes))
        return data

    async def read_text(
        self, path: str, *, encoding: str = "utf-8", errors: str = "strict", max_bytes: int = DEFAULT_READ_MAX_BYTES
    ) -> str:
        """:meth:`read_file`, decoded."""
        return (await self.read_file(path, max_bytes=max_bytes)).decode(encoding, errors)

    async def write_file(
        self,
        path: str,
        data: bytes | str,
        *,
        mode: int = 0o644,
        parents: bool = False,
        exclusive: bool = False,
    ) -> None:
        """Writes ``data`` (``str`` is UTF-8 encoded) to ``path``, streamed into the box.

        A file it creates gets exactly ``mode``; an existing file keeps its mode and owner and
        is replaced, unless ``exclusive`` (then :class:`FileExistsError`). ``parents`` creates
        missing parent directories."""
        _check_path(path)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise InvalidOptionError(f"mode={mode!r} must be a permission mode from 0 to 0o7777")
        await _bridge.call(lambda c: self._inner.write_file(c, path, payload, mode, parents, exclusive))

    async def list_dir(self, path: str = ".") -> list[FileInfo]:
        """The entries of directory ``path``, sorted by name (symlinks are described, not
        followed); :class:`NotADirectoryError` when it is not one."""
        _check_path(path)
        entries = json.loads(await _bridge.call(lambda c: self._inner.list_dir(c, path)))
        return [FileInfo._from_engine(entry) for entry in entries]

    async def stat(self, path: str, *, follow_symlinks: bool = True) -> FileInfo:
        """What ``path`` is (the symlink itself when ``follow_symlinks`` is false)."""
        _check_path(path)
        answer = await _bridge.call(lambda c: self._inner.stat(c, path, follow_symlinks))
        return FileInfo._from_engine(json.loads(answer))

    async def exists(self, path: str) -> bool:
        """Whether ``path`` exists (a dangling symlink counts)."""
        try:
            await self.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True
