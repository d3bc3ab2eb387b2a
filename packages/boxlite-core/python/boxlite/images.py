"""The image cache: ``runtime.images.pull()``, ``.import_archive()``, ``.list()``, ``.remove()``,
``.prune()``.

Images are pulled by the engine (OCI distribution v2, mirrors, auth, digest verification) into
content-addressed blobs under ``BOXLITE_HOME/images/`` shared by every image, and indexed in
``BOXLITE_HOME/db/images.db``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from . import _bridge

if TYPE_CHECKING:
    from . import _engine

logger = logging.getLogger("boxlite.images")


@dataclass(frozen=True)
class ImageRegistry:
    """Credentials and transport settings for one registry host.

    ``ImageRegistry("ghcr.io", username="me", password=token)``. ``host`` is ``name[:port]`` as
    in image references. Plain HTTP is used for loopback hosts; ``insecure=True`` allows it for
    this host too.
    """

    host: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False


class ImageInfo(BaseModel):
    """One cached image."""

    model_config = ConfigDict(frozen=True)

    #: Canonical reference, e.g. ``docker.io/library/python:slim``.
    reference: str
    repository: str
    #: Digest of the platform manifest the image runs from.
    manifest_digest: str
    #: Digest of the multi-platform index it was selected from, if any.
    index_digest: str | None
    config_digest: str
    #: Layer digests, bottom first.
    layers: list[str]
    #: Compressed size of config and layers, in bytes.
    size: int
    #: Where it came from (registry or mirror URL).
    source: str
    pulled_at: str


class GcReport(BaseModel):
    """What a removal or :meth:`Images.prune` deleted."""

    model_config = ConfigDict(frozen=True)

    blobs_removed: int
    disks_removed: int
    bytes_freed: int


@dataclass(frozen=True)
class PullProgress:
    """A progress event of a pull.

    ``event`` is ``resolved`` (manifest known: ``layers``, ``total_bytes``, ``source``),
    ``progress`` (``digest``, ``downloaded`` of ``total`` bytes) or ``layer_done``
    (``digest``; ``cached`` when the blob was already in the cache).
    """

    event: str
    reference: str | None = None
    source: str | None = None
    manifest_digest: str | None = None
    layers: int | None = None
    total_bytes: int | None = None
    digest: str | None = None
    downloaded: int | None = None
    total: int | None = None
    cached: bool | None = None


class Images:
    """The image cache of a runtime (``runtime.images``)."""

    def __init__(self, inner: _engine.Runtime) -> None:
        self._inner = inner

    async def pull(self, reference: str, progress: Callable[[PullProgress], None] | None = None) -> ImageInfo:
        """Pulls ``reference`` (``python:slim``, ``ghcr.io/org/app:1``, ``name@sha256:...``) from
        its mirrors or registry into the cache, and returns what was stored.

        ``progress`` is called on the event loop's thread with each :class:`PullProgress`.
        Errors raise :class:`~boxlite.errors.ImageError` naming the image and the cause; the
        cache stays consistent and a retried pull resumes from the blobs already stored.
        """
        pull = self._inner.pull_image(reference)
        while (event := await _bridge.call(pull.next_event)) is not None:
            if progress is not None:
                try:
                    progress(PullProgress(**json.loads(event)))
                except Exception:
                    logger.exception("the pull progress callback failed")
        info = ImageInfo.model_validate_json(await _bridge.call(pull.result))
        logger.info("pulled %s (%s) from %s", info.reference, info.manifest_digest, info.source)
        return info

    async def import_archive(self, path: str | os.PathLike[str], reference: str | None = None) -> list[ImageInfo]:
        """Imports a ``docker save`` archive into the cache and returns its images, named by the
        tags the archive carries (or ``reference``, for an archive of one image).

        A box can also boot from an archive directly: ``BoxOptions(image="/path/to/image.tar")``.
        """
        path_text = os.fspath(path)
        records = await _bridge.call(lambda c: self._inner.import_image_archive(c, path_text, reference))
        return [ImageInfo.model_validate(d) for d in json.loads(records)]

    async def list(self) -> list[ImageInfo]:
        """Every cached image."""
        return [ImageInfo.model_validate(d) for d in json.loads(self._inner.list_images())]

    async def remove(self, reference: str) -> GcReport:
        """Removes ``reference`` from the cache and deletes the blobs only it used (and base disks
        no box uses). :class:`~boxlite.errors.ImageError` if it is not cached."""
        return GcReport.model_validate_json(await _bridge.call(lambda c: self._inner.remove_image(c, reference)))

    async def prune(self) -> GcReport:
        """Deletes blobs no cached image references and base disks no image or box uses."""
        return GcReport.model_validate_json(await _bridge.call(self._inner.collect_image_garbage))
