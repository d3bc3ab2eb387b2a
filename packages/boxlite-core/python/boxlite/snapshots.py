"""Snapshots of boxes: ``await box.snapshot()`` saves a box's whole state (memory, devices and
disk) under ``BOXLITE_HOME/snapshots/``, recorded in ``BOXLITE_HOME/db/snapshots.db``;
``runtime.snapshots.list()``, ``.get()``, ``.remove()`` manage them, and
``await runtime.create(BoxOptions(snapshot="name"))`` (or ``runtime.restore("name")``) starts
a new box from one: its processes, files and memory where they were.

A snapshot is never run unless its state file matches the checksum recorded when it was taken
and it was taken with the guest kernel, guest agent and QEMU this runtime uses; otherwise
restoring it raises :class:`~boxlite.errors.SnapshotError` with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from . import _engine


class SnapshotVersions(BaseModel):
    """What a snapshot depends on: restoring it with any other is refused."""

    model_config = ConfigDict(frozen=True)

    #: The guest kernel (first 16 hex digits of its sha256).
    kernel: str
    #: The guest agent's initramfs (first 16 hex digits of its sha256).
    agent: str
    #: The QEMU version.
    qemu: str


class SnapshotInfo(BaseModel):
    """One snapshot, as recorded in ``db/snapshots.db``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    name: str
    #: The id of the box it was taken of.
    source_box: str
    image: str
    image_digest: str
    versions: SnapshotVersions
    #: The guest kernel's release (``uname -r`` in the box).
    kernel_release: str
    cpus: int
    memory_mib: int
    #: Whether the box had a network device.
    network: bool
    #: Bytes its files take on disk (the state file is sparse: untouched memory takes none).
    size_bytes: int
    #: RFC 3339, UTC.
    created_at: str
    #: sha256 over the state file's contents, checked before every restore.
    checksum: str
    #: How long the box was paused while its state was saved, in milliseconds.
    took_ms: int
    #: Its directory (``snapshots/<id>/``: ``state``, ``memory``, ``disk.qcow2``,
    #: ``snapshot.json``).
    dir: Path
    #: The id of the box :meth:`~boxlite.Box.fork` took it of (``None`` for a user's
    #: snapshot); removed by the next ``fork()`` or ``runtime.remove()`` once no fork uses it.
    fork_of: str | None = None
    #: sha256 over the memory file's contents, checked before every restore, when the guest's
    #: memory is kept in a file of its own (``memory``), which every box restored from the
    #: snapshot maps copy-on-write: they share each page none of them wrote. ``None`` when the
    #: state file holds the memory (each restore then loads a copy of its own).
    memory_checksum: str | None = None

    @property
    def shares_memory(self) -> bool:
        """Whether boxes restored from it share its memory (see ``memory_checksum``)."""
        return self.memory_checksum is not None


class Snapshots:
    """The snapshots of a runtime's home (``runtime.snapshots``)."""

    def __init__(self, inner: _engine.Runtime) -> None:
        self._inner = inner

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot of this home, oldest first."""
        return [SnapshotInfo.model_validate(s) for s in json.loads(self._inner.list_snapshots())]

    def get(self, name_or_id: str) -> SnapshotInfo:
        """The snapshot with this name or id.

        Raises:
            SnapshotNotFoundError: no snapshot has that name or id.
        """
        return SnapshotInfo.model_validate_json(self._inner.get_snapshot(name_or_id))

    def remove(self, name_or_id: str) -> None:
        """Deletes a snapshot and its files.

        Raises:
            SnapshotNotFoundError: no snapshot has that name or id.
            SnapshotError: a box restored from it still exists (its disk builds on the
                snapshot's); remove that box first.
        """
        self._inner.remove_snapshot(name_or_id)
