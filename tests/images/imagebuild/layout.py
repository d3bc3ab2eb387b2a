"""Writing, reading and verifying OCI image layouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


from .common import (
    CREATED,
    GZIP_LEVEL,
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_LAYER_GZIP,
    MEDIA_LAYER_TAR,
    MEDIA_MANIFEST,
    REF_NAME_ANNOTATION,
    LayoutError,
    canonical_json,
    oci_arch,
    sha256_digest,
)
from .entries import Member


class _HashingWriter(io.RawIOBase):
    """A write-only stream that passes what it is given on to ``target`` and hashes it."""

    def __init__(self, target: IO[bytes]) -> None:
        super().__init__()
        self._target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        self._target.write(view)
        self.hash.update(view)
        self.size += view.nbytes
        return view.nbytes


class _HashingReader(io.RawIOBase):
    """A read-only stream over ``source`` that hashes what is read through it."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self._source = source
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        view[: len(data)] = data
        self.hash.update(data)
        return len(data)


@dataclass(frozen=True)
class Layer:
    """A layer blob in a layout: ``digest`` and ``size`` of the gzipped blob, ``diff_id`` of the tar."""

    digest: str
    size: int
    diff_id: str
    created_by: str


class LayoutWriter:
    """Writes one image into a new OCI image layout directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True)

    def blob_path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives in this layout."""
        return self.blobs / digest.removeprefix("sha256:")

    def _store(self, temp: Path, digest: str) -> None:
        os.chmod(temp, 0o644)
        os.replace(temp, self.blob_path(digest))

    def add_blob(self, data: bytes) -> tuple[str, int]:
        """Stores ``data``; returns its digest and size."""
        digest = sha256_digest(data)
        temp = self.blobs / f".tmp-{digest[7:]}"
        temp.write_bytes(data)
        self._store(temp, digest)
        return digest, len(data)

    def write_layer(self, members: Iterable[Member], created_by: str) -> Layer:
        """Writes a gzipped tar layer of ``members`` (in that order) in one pass."""
        fd, temp_name = tempfile.mkstemp(prefix=".layer-", dir=self.blobs)
        with os.fdopen(fd, "wb") as blob:
            compressed = _HashingWriter(blob)
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL)
            with gz:
                uncompressed = _HashingWriter(cast(IO[bytes], gz))
                with tarfile.open(fileobj=cast(IO[bytes], uncompressed), mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for info, data in members:
                        tar.addfile(info, data)
        digest = "sha256:" + compressed.hash.hexdigest()
        self._store(Path(temp_name), digest)
        return Layer(digest, compressed.size, "sha256:" + uncompressed.hash.hexdigest(), created_by)

    def copy_layer(self, layout: Path, index: int) -> Layer:
        """Copies layer ``index`` of the image in ``layout`` (the blob stays byte-identical)."""
        manifest, config = read_image(layout)
        descriptor = manifest["layers"][index]
        history = [h for h in config.get("history", []) if not h.get("empty_layer")]
        layer = Layer(
            descriptor["digest"],
            descriptor["size"],
            config["rootfs"]["diff_ids"][index],
            history[index].get("created_by", "") if index < len(history) else "",
        )
        source = layout / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")
        shutil.copyfile(source, self.blobs / ".copy")
        self._store(self.blobs / ".copy", layer.digest)
        return layer

    def write_image(
        self,
        layers: Sequence[Layer],
        *,
        ref_name: str,
        env: Sequence[str],
        cmd: Sequence[str],
        working_dir: str | None = None,
    ) -> str:
        """Writes config, manifest, ``index.json`` and ``oci-layout``; returns the manifest digest."""
        container_config: dict[str, Any] = {"Env": list(env), "Cmd": list(cmd)}
        if working_dir:
            container_config["WorkingDir"] = working_dir
        config = {
            "created": CREATED,
            "architecture": oci_arch(),
            "os": "linux",
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": CREATED, "created_by": layer.created_by} for layer in layers],
        }
        config_digest, config_size = self.add_blob(canonical_json(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": x.digest, "size": x.size} for x in layers],
        }
        manifest_digest, manifest_size = self.add_blob(canonical_json(manifest))
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "annotations": {REF_NAME_ANNOTATION: ref_name},
                    "platform": {"architecture": oci_arch(), "os": "linux"},
                }
            ],
        }
        (self.root / "index.json").write_bytes(canonical_json(index))
        (self.root / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        return manifest_digest


def _read_blob(layout: Path, descriptor: dict[str, Any]) -> bytes:
    digest = str(descriptor.get("digest", ""))
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise LayoutError(f"{layout}: unsupported or malformed digest {digest!r}")
    path = layout / "blobs" / "sha256" / digest[7:]
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LayoutError(f"{layout}: blob {digest} unreadable: {e}") from e
    if sha256_digest(data) != digest:
        raise LayoutError(f"{layout}: blob {digest} does not hash to its name")
    if descriptor.get("size") != len(data):
        raise LayoutError(f"{layout}: blob {digest} is {len(data)} bytes, its descriptor says {descriptor.get('size')}")
    return data


def read_image(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and config of the (first) image in ``layout``, each blob checked."""
    index = json.loads((layout / "index.json").read_bytes())
    manifests = index.get("manifests") or []
    if not manifests:
        raise LayoutError(f"{layout}: index.json lists no manifests")
    manifest = json.loads(_read_blob(layout, manifests[0]))
    config = json.loads(_read_blob(layout, manifest["config"]))
    return manifest, config


def verify_layout(layout: Path) -> dict[str, Any]:
    """Checks ``layout`` as an OCI image layout, thoroughly; raises :class:`LayoutError`.

    Checked: ``oci-layout``; ``index.json`` (schema version, media types, ref name and
    platform annotations); that every blob hashes to its name and has its descriptor's size;
    manifest and config media types and schema; that the config's platform matches the
    index's; that each layer is a readable (gzipped) tar whose uncompressed bytes hash to its
    ``diff_id``; one history entry per layer; that no blob is unreferenced.
    Returns a summary: ref name, manifest digest, layer digests, entry counts and sizes.
    """

    def fail(reason: str) -> LayoutError:
        return LayoutError(f"{layout}: {reason}")

    try:
        oci_layout = json.loads((layout / "oci-layout").read_bytes())
        index = json.loads((layout / "index.json").read_bytes())
    except (OSError, ValueError) as e:
        raise fail(f"oci-layout or index.json unreadable: {e}") from e
    if oci_layout != {"imageLayoutVersion": "1.0.0"}:
        raise fail(f"oci-layout is {oci_layout!r}")
    if index.get("schemaVersion") != 2 or index.get("mediaType") != MEDIA_INDEX:
        raise fail("index.json is not an OCI image index (schemaVersion 2, mediaType)")
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise fail(f"index.json lists {len(manifests)} manifests, expected 1")
    descriptor = manifests[0]
    ref_name = (descriptor.get("annotations") or {}).get(REF_NAME_ANNOTATION)
    platform_ = descriptor.get("platform") or {}
    if descriptor.get("mediaType") != MEDIA_MANIFEST or not ref_name:
        raise fail("the manifest descriptor lacks its media type or ref name annotation")
    referenced = {descriptor["digest"]}
    manifest = json.loads(_read_blob(layout, descriptor))
    if manifest.get("schemaVersion") != 2 or manifest.get("mediaType") != MEDIA_MANIFEST:
        raise fail("the manifest is not an OCI image manifest")
    if manifest["config"].get("mediaType") != MEDIA_CONFIG:
        raise fail(f"config media type is {manifest['config'].get('mediaType')!r}")
    referenced.add(manifest["config"]["digest"])
    config = json.loads(_read_blob(layout, manifest["config"]))
    if (config.get("architecture"), config.get("os")) != (platform_.get("architecture"), platform_.get("os")):
        raise fail("the config's architecture/os differ from the index's platform")
    if config.get("os") != "linux" or not config.get("config", {}).get("Env"):
        raise fail("the config lacks os linux or config.Env")
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    layers = manifest.get("layers", [])
    if config["rootfs"].get("type") != "layers" or len(diff_ids) != len(layers):
        raise fail(f"{len(layers)} layers but {len(diff_ids)} rootfs.diff_ids")
    history = [h for h in config.get("history", []) if not h.get("empty_layer")]
    if len(history) != len(layers):
        raise fail(f"{len(layers)} layers but {len(history)} non-empty history entries")
    summary_layers = []
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        media_type = layer.get("mediaType")
        if media_type not in (MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR):
            raise fail(f"layer {layer.get('digest')} has media type {media_type!r}")
        blob = _read_blob(layout, layer)
        referenced.add(layer["digest"])
        stream: IO[bytes] = io.BytesIO(blob)
        if media_type == MEDIA_LAYER_GZIP:
            stream = cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
        reader = _HashingReader(stream)
        try:
            with tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|") as tar:
                entries = sum(1 for _ in tar)
            while reader.read(1 << 20):
                pass
        except (OSError, tarfile.TarError, EOFError) as e:
            raise fail(f"layer {layer['digest']} is not a readable tar: {e}") from e
        if "sha256:" + reader.hash.hexdigest() != diff_id:
            raise fail(f"layer {layer['digest']}: uncompressed content does not hash to diff_id {diff_id}")
        summary_layers.append(
            {"digest": layer["digest"], "size": layer["size"], "diff_id": diff_id, "entries": entries}
        )
    stored = {"sha256:" + p.name for p in (layout / "blobs" / "sha256").iterdir()}
    if stored != referenced:
        raise fail(f"unreferenced or missing blobs: {sorted(stored ^ referenced)}")
    return {
        "ref_name": ref_name,
        "manifest_digest": descriptor["digest"],
        "layers": summary_layers,
        "compressed_bytes": sum(x["size"] for x in layers),
    }
