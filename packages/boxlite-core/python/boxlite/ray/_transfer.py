"""Files crossing between the driver and a node for ``copy_in`` / ``copy_out``: a tree packed as
an in-memory tar archive (modes kept), bounded by :data:`MAX_TRANSFER_BYTES`, unpacked with
tarfile's ``data`` filter (no absolute paths, no ``..``, no device files, no links out)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from ..errors import CopyError

#: The largest tree ``copy_in`` / ``copy_out`` of a remote box moves (bytes of archive). It
#: travels through Ray's object store; move larger data through shared storage.
MAX_TRANSFER_BYTES = 512 * 1024 * 1024

#: The name the tree has inside an archive.
ROOT = "tree"


def pack(path: str | os.PathLike[str]) -> bytes:
    """``path`` (a file or a directory tree) as a tar archive whose single top entry is ``ROOT``."""
    source = Path(path)
    if not source.exists():
        raise CopyError(f"copy: {source} does not exist on this machine")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(str(source), arcname=ROOT)
    if buffer.tell() > MAX_TRANSFER_BYTES:
        raise CopyError(
            f"copy: {source} packs to {buffer.tell()} bytes, more than a remote copy moves "
            f"({MAX_TRANSFER_BYTES}): move it through storage every node can read"
        )
    return buffer.getvalue()


def unpack(archive: bytes, directory: str | os.PathLike[str]) -> Path:
    """Unpacks ``archive`` (from :func:`pack`) into ``directory``; returns the tree's path."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        tar.extractall(directory, filter="data")
    return Path(directory) / ROOT


__all__ = ["MAX_TRANSFER_BYTES", "pack", "unpack"]
