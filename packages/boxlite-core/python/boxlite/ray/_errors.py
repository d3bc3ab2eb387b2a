"""The errors of :mod:`boxlite.ray` beyond the library's own (:mod:`boxlite.errors`)."""

from __future__ import annotations

from ..errors import BoxDiedError


class BoxLostError(BoxDiedError):
    """The Ray node (or its actor) that ran the box died: the call failed, the box is gone with
    it, and its lease is never handed out again. Lease another box: the pool places it on a
    node that is still alive."""

    def __init__(self, message: str, *, node_id: str, box_id: str | None = None) -> None:
        super().__init__(message)
        #: The Ray node id of the node that was lost.
        self.node_id = node_id
        #: The box that was lost with it (``None`` when no box was leased yet).
        self.box_id = box_id


__all__ = ["BoxLostError"]
