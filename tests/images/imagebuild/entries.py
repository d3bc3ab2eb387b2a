"""Layer members: synthetic entries stated explicitly, or a directory tree made during a build."""

from __future__ import annotations

import io
import logging
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .common import FIXED_MTIME, BuildError

log = logging.getLogger("build_images")


@dataclass(frozen=True)
class Entry:
    """One member of a synthetic layer, every piece of its metadata stated explicitly.

    ``path`` is relative to the image root, without a leading or trailing slash. ``link`` is
    a symlink's target or, for a hard link, the layer path of the file it links to.
    """

    path: str
    type: bytes
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    link: str = ""
    device: tuple[int, int] = (0, 0)

    def tarinfo(self) -> tarfile.TarInfo:
        """The tar header of this entry (numeric owner only, fixed timestamp)."""
        info = tarfile.TarInfo(self.path)
        info.type = self.type
        info.mode = self.mode
        info.uid, info.gid = self.uid, self.gid
        info.uname = info.gname = ""
        info.mtime = FIXED_MTIME
        info.size = len(self.data) if self.type == tarfile.REGTYPE else 0
        info.linkname = self.link
        info.devmajor, info.devminor = self.device
        return info


def regular(path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    """A regular file."""
    return Entry(path, tarfile.REGTYPE, mode, uid, gid, data=data)


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    """A directory."""
    return Entry(path, tarfile.DIRTYPE, mode, uid, gid)


def symlink(path: str, target: str, uid: int = 0, gid: int = 0) -> Entry:
    """A symbolic link (mode 0777, as Linux shows every symlink)."""
    return Entry(path, tarfile.SYMTYPE, 0o777, uid, gid, link=target)


def hardlink(path: str, target: str, like: Entry) -> Entry:
    """A hard link to ``target``, an earlier member; it shares that file's metadata ``like``."""
    return Entry(path, tarfile.LNKTYPE, like.mode, like.uid, like.gid, link=target)


def fifo(path: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    """A named pipe."""
    return Entry(path, tarfile.FIFOTYPE, mode, uid, gid)


def char_device(path: str, major: int, minor: int, mode: int = 0o666) -> Entry:
    """A character device node, owned by root."""
    return Entry(path, tarfile.CHRTYPE, mode, device=(major, minor))


def whiteout(path: str) -> Entry:
    """A whiteout: ``dir/.wh.name`` hides ``dir/name`` of the layers below."""
    parent, _, name = path.rpartition("/")
    return regular(f"{parent}/.wh.{name}" if parent else f".wh.{name}", b"", mode=0o600)


def opaque_whiteout(dir_path: str) -> Entry:
    """An opaque whiteout: hides everything the layers below put in ``dir_path``."""
    return regular(f"{dir_path}/.wh..wh..opq", b"", mode=0o600)


#: A tar header and, for a regular file, its content.
Member = tuple[tarfile.TarInfo, IO[bytes] | None]


def entry_members(entries: Iterable[Entry]) -> Iterator[Member]:
    """Tar members for synthetic entries, in the order given."""
    for entry in entries:
        yield entry.tarinfo(), io.BytesIO(entry.data) if entry.type == tarfile.REGTYPE else None


def tree_members(root: Path, built_since: float) -> Iterator[Member]:
    """Tar members for the tree at ``root``, as it is on disk, in sorted depth-first order.

    Owners (numeric only), modes, symlinks, hard links and device nodes are kept exactly.
    Timestamps are kept for what predates ``built_since`` (files unpacked from packages, so
    Python's .pyc files stay valid); whatever the build itself wrote gets :data:`FIXED_MTIME`.
    A mount point inside the tree is an error, never something to archive. The root
    directory itself is not an entry.
    """
    root_dev = os.lstat(root).st_dev
    inodes: dict[tuple[int, int], str] = {}

    def walk(directory_path: str, prefix: str) -> Iterator[Member]:
        with os.scandir(directory_path) as scan:
            children = sorted(scan, key=lambda e: os.fsencode(e.name))
        for child in children:
            st = child.stat(follow_symlinks=False)
            if st.st_dev != root_dev:
                raise BuildError(f"{child.path} is on another file system (still mounted?)")
            arcname = prefix + child.name
            info = tarfile.TarInfo(arcname)
            info.mode = stat.S_IMODE(st.st_mode)
            info.uid, info.gid = st.st_uid, st.st_gid
            info.uname = info.gname = ""
            info.mtime = int(st.st_mtime) if st.st_mtime < built_since else FIXED_MTIME
            if stat.S_ISREG(st.st_mode):
                inode = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and inode in inodes:
                    info.type, info.linkname = tarfile.LNKTYPE, inodes[inode]
                    yield info, None
                    continue
                if st.st_nlink > 1:
                    inodes[inode] = arcname
                info.type, info.size = tarfile.REGTYPE, st.st_size
                with open(child.path, "rb") as data:
                    yield info, data
                continue
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(child.path)
            elif stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            else:
                log.warning("skipping %s: sockets cannot be archived", child.path)
                continue
            yield info, None
            if info.type == tarfile.DIRTYPE:
                yield from walk(child.path, arcname + "/")

    return walk(os.fspath(root), "")
