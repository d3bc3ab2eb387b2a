"""Progress of creating a box (``Boxlite.create(options, progress=...)``): the image pulled if
the cache lacks it, its base disk built the first time an image is used, then the boot (or the
restore of a snapshot). Each stage reports ``started`` and ``done``; a pull also forwards its
own :class:`~boxlite.images.PullProgress` events."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..images import PullProgress

logger = logging.getLogger("boxlite")

#: The stages of creating a box, in order; ``pull`` and ``base_disk`` are skipped for a
#: restore, ``pull`` also when the image is cached or local.
Stage = Literal["pull", "base_disk", "boot", "restore"]


@dataclass(frozen=True)
class StartProgress:
    """One step of creating a box.

    Attributes:
        stage: ``pull`` (the image is downloaded), ``base_disk`` (the image's ext4 base disk is
            found cached or built: the first box of an image waits for it), ``boot`` (the VM
            starts and its agent answers) or ``restore`` (a snapshot is loaded instead).
        event: ``started``, ``progress`` (pull only: see :attr:`pull`) or ``done``.
        elapsed_s: Seconds since the stage started (0 at ``started``).
        pull: The pull's own event, for ``stage="pull", event="progress"``.
        built: At ``base_disk`` ``done``: whether this call built the disk (``False``: cached).
        timings: At ``boot``/``restore`` ``done``: the box's stage timings in ms
            (``BoxInfo.timings``).
    """

    stage: Stage
    event: Literal["started", "progress", "done"]
    elapsed_s: float = 0.0
    pull: PullProgress | None = None
    built: bool | None = None
    timings: dict[str, int] = field(default_factory=dict)


class ProgressReporter:
    """Sends a create's :class:`StartProgress` events to a callback; a failing callback is
    logged, never raised into the create."""

    def __init__(self, callback: Callable[[StartProgress], None]) -> None:
        self._callback = callback
        self._stage: Stage | None = None
        self._started = 0.0

    def _send(self, event: StartProgress) -> None:
        try:
            self._callback(event)
        except Exception:
            logger.exception("the start progress callback failed")

    def start(self, stage: Stage) -> None:
        self._stage, self._started = stage, time.monotonic()
        self._send(StartProgress(stage=stage, event="started"))

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def pulled(self, event: PullProgress) -> None:
        self._send(StartProgress(stage="pull", event="progress", elapsed_s=self.elapsed(), pull=event))

    def done(self, *, built: bool | None = None, timings: dict[str, int] | None = None) -> None:
        assert self._stage is not None, "done() without start()"
        self._send(
            StartProgress(stage=self._stage, event="done", elapsed_s=self.elapsed(), built=built, timings=timings or {})
        )


__all__ = ["ProgressReporter", "Stage", "StartProgress"]
