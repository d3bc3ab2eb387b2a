#!/usr/bin/env python3
"""Build BoxLite's test images as OCI image layouts, from Debian packages, cached outside git.

Images (see README.md next to this file):

* ``busybox``: one layer: the static busybox of Debian's ``busybox-static`` package, a
  symlink in /bin for each of its applets, /etc/passwd and /etc/group, the usual directories.
* ``layered``: the busybox layer (the very same blob) and two more layers that exercise the
  layer-unpacking rules: whiteouts, an opaque directory, a directory replaced by a file,
  owners, modes, links, special files and a write through an absolute symlink
  (``layered_expected.json`` states the file system a correct unpacker produces).
* ``python``: Debian bookworm made by ``debootstrap --variant=minbase`` with python3, one
  layer. Building it needs root (debootstrap does) and the Debian archive.

Every image is built into a temporary directory and renamed into the cache as
``<cache>/<name>-<key>``, where the key hashes what decides its content (this script's code
for that image, the busybox binary, the debootstrap version, the Debian suite, mirror and
packages), so an image is rebuilt only when one of those changes. ``<cache>/<name>`` is a
symlink to the newest one. The default cache is
``${BOXLITE_BUILD_CACHE:-~/.cache/boxlite-build}/test-images``.

Layers are written with :mod:`tarfile` from explicitly stated headers (owners, modes, links,
device nodes; no root needed for that), sorted, with fixed timestamps and a gzip header with
no name or time, so busybox and layered rebuild to identical digests, and so does python as
long as the Debian archive serves the same package versions.

Usage::

    python tests/images/build_images.py [--cache DIR] [--rebuild] [--verify] [--prune] [names...]

The last line on stdout is a JSON object mapping each requested image to its layout
directory. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import gzip
import hashlib
import inspect
import io
import json
import logging
import os
import platform
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger("build_images")

#: Bump to invalidate every cached image (the code is part of each key anyway).
FORMAT_VERSION = 1
#: Timestamp of every synthetic entry and of everything made during a build:
#: 2024-01-01T00:00:00Z, after 1980 so that zip archives of image files still work.
FIXED_MTIME = 1704067200
CREATED = "2024-01-01T00:00:00Z"
GZIP_LEVEL = 6
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def _apt_archive_uri() -> str:
    """The Debian archive this machine's apt already uses (one-line or deb822 sources).

    The mirror is read from the machine's configuration so that no host is named here.
    """
    sources = Path("/etc/apt")
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]:
        for line in path.read_text().splitlines() if path.is_file() else []:
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm" and not words[1].startswith("["):
                return words[1]
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "-security" not in line:
                return line.split()[1]
    return ""


DEBIAN_MIRROR = os.environ.get("BOXLITE_DEBIAN_MIRROR") or _apt_archive_uri()
DEBIAN_SUITE = "bookworm"
PYTHON_PACKAGES = ("python3", "python-is-python3", "ca-certificates")
#: The python image plus matplotlib (Debian's build, with numpy and pillow), for the tests of
#: image collection by the agent tools; kept apart so the plain python image stays small.
PYTHON_PLOT_PACKAGES = (*PYTHON_PACKAGES, "python3-matplotlib")

#: Paths dpkg is told not to install in the python image (and that are removed after
#: debootstrap), as in Debian's "slim" container images.
SLIM_EXCLUDE = (
    "/usr/share/doc/*",
    "/usr/share/groff/*",
    "/usr/share/info/*",
    "/usr/share/linda/*",
    "/usr/share/lintian/*",
    "/usr/share/locale/*",
    "/usr/share/man/*",
)
SLIM_INCLUDE = ("/usr/share/doc/*/copyright",)
#: Files debootstrap leaves that are caches, logs, backups or the build host's own settings.
VOLATILE_FILES = (
    "etc/resolv.conf",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/cache/debconf/*-old",
    "var/cache/ldconfig/aux-cache",
    "var/lib/apt/lists/*",
    "var/lib/apt/lists/partial/*",
    "var/lib/dpkg/*-old",
    "var/log/*.log",
    "var/log/apt/*",
)

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"app:x:1000:1000:app:/home/app:/bin/sh\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = b"root:x:0:\ntty:x:5:\napp:x:1000:\nnogroup:x:65534:\n"
HOSTS = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
HOSTNAME = b"boxlite\n"


class BuildError(RuntimeError):
    """An image could not be built; the message says why and what to do about it."""


class LayoutError(ValueError):
    """A directory is not a valid OCI image layout."""


# --------------------------------------------------------------------------------------
# Small helpers


def canonical_json(value: object) -> bytes:
    """Serialise ``value`` deterministically (sorted keys, no whitespace)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    """The OCI digest (``sha256:<hex>``) of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_arch() -> str:
    """The OCI (and Debian) name of this host's architecture: images hold the host's binaries."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        raise BuildError(f"unsupported host architecture {machine!r} (amd64 and arm64 are)")
    return arch


def default_cache_dir() -> Path:
    """``${BOXLITE_BUILD_CACHE:-~/.cache/boxlite-build}/test-images``."""
    base = os.environ.get("BOXLITE_BUILD_CACHE") or "~/.cache/boxlite-build"
    return Path(base).expanduser() / "test-images"


def _run(cmd: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing text output; raise :class:`BuildError` with its stderr on failure."""
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as e:
        raise BuildError(f"{cmd[0]} not found") from e
    except subprocess.CalledProcessError as e:
        raise BuildError(f"{' '.join(map(str, cmd))} failed ({e.returncode}): {e.stderr.strip()}") from e


def _dpkg_version(package: str) -> str | None:
    """The installed version of a Debian package, or None."""
    try:
        return _run(["dpkg-query", "-W", "-f=${Version}", package]).stdout.strip() or None
    except BuildError:
        return None


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


# --------------------------------------------------------------------------------------
# Layer members


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


# --------------------------------------------------------------------------------------
# Writing OCI image layouts


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


# --------------------------------------------------------------------------------------
# Reading and verifying OCI image layouts


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


# --------------------------------------------------------------------------------------
# The images


@dataclass
class BuildContext:
    """What an image's build function gets: where to write, its tag, dependencies, scratch space."""

    out: LayoutWriter
    ref_name: str
    deps: dict[str, Path]
    work: Path
    cache_dir: Path


@dataclass(frozen=True)
class ImageSpec:
    """How to build one image.

    ``inputs`` returns the cheap facts (besides code) that decide the image's content; they
    and the source of this script, less the ``own_code`` of the *other* images, make the
    cache key. ``build`` writes the layout and returns details for the build record.
    """

    name: str
    ref_name: str
    inputs: Callable[[], dict[str, Any]]
    build: Callable[[BuildContext], dict[str, Any]]
    own_code: tuple[Callable[..., Any], ...]
    depends_on: tuple[str, ...] = ()


def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit ELF executable without a program interpreter (statically linked)."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2:
                return False
            endian = "<" if header[5] == 1 else ">"
            (phoff,) = struct.unpack_from(endian + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def find_busybox() -> Path:
    """A statically linked busybox: ``$BOXLITE_BUSYBOX``, else Debian's busybox-static one."""
    override = os.environ.get("BOXLITE_BUSYBOX")
    candidates = [Path(override)] if override else [Path("/bin/busybox"), Path("/usr/bin/busybox")]
    for candidate in candidates:
        if _is_static_elf(candidate):
            return candidate
    raise BuildError(
        f"no statically linked busybox at {', '.join(map(str, candidates))}: install Debian's "
        "busybox-static (apt-get install busybox-static) or set BOXLITE_BUSYBOX to one"
    )


def busybox_inputs() -> dict[str, Any]:
    """Busybox's content is decided by the binary (its applets come from it)."""
    binary = find_busybox()
    return {"busybox_sha256": hashlib.sha256(binary.read_bytes()).hexdigest(), "arch": oci_arch()}


def busybox_entries(binary: bytes, applets: Sequence[str]) -> list[Entry]:
    """The busybox image's file system."""
    return [
        directory("bin"),
        regular("bin/busybox", binary, mode=0o755),
        *(symlink(f"bin/{applet}", "busybox") for applet in applets),
        directory("dev"),
        directory("etc"),
        regular("etc/group", GROUP),
        regular("etc/hostname", HOSTNAME),
        regular("etc/hosts", HOSTS),
        regular("etc/passwd", PASSWD),
        directory("home"),
        directory("home/app", uid=1000, gid=1000),
        directory("proc", mode=0o555),
        directory("root", mode=0o700),
        directory("sys", mode=0o555),
        directory("tmp", mode=0o1777),
        directory("usr"),
        directory("usr/bin"),
        symlink("usr/bin/env", "/bin/env"),
    ]


def build_busybox(ctx: BuildContext) -> dict[str, Any]:
    """One layer: static busybox, its applet symlinks, passwd/group, the usual directories."""
    binary_path = find_busybox()
    version = _run([binary_path]).stdout.splitlines()[0].split(" multi-call")[0]
    applets = sorted(set(_run([binary_path, "--list"]).stdout.split()) - {"busybox"})
    if not applets or any("/" in a for a in applets):
        raise BuildError(f"{binary_path} --list gave an unusable applet list")
    entries = sorted(busybox_entries(binary_path.read_bytes(), applets), key=lambda e: e.path)
    layer = ctx.out.write_layer(
        entry_members(entries), f"{version}: /bin/busybox and {len(applets)} applet symlinks, /etc files"
    )
    ctx.out.write_image([layer], ref_name=ctx.ref_name, env=[f"PATH={DEFAULT_PATH}"], cmd=["sh"])
    return {"busybox": version, "applets": len(applets)}


def layered_inputs() -> dict[str, Any]:
    """The layered image's own inputs are all in its code (the busybox layer is a dependency)."""
    return {"arch": oci_arch()}


def layered_layer_2() -> list[Entry]:
    """Files of every kind, owners and modes; what layer 3 then hides, replaces or rewrites."""
    keep = regular("data/keep.txt", b"keep\n", mode=0o640, uid=1000, gid=1000)
    return [
        directory("data"),
        keep,
        hardlink("data/hard.txt", keep.path, like=keep),
        regular("data/remove-me.txt", b"remove me\n"),
        regular("data/modified.txt", b"v1\n"),
        directory("data/opaque"),
        regular("data/opaque/old.txt", b"old\n"),
        directory("data/dir-to-replace"),
        regular("data/dir-to-replace/x", b"x\n"),
        symlink("data/link-rel", "keep.txt"),
        symlink("data/link-abs", "/data/keep.txt"),
        directory("data/private", mode=0o700, uid=1000, gid=1000),
        regular("data/private/note.txt", b"private\n", mode=0o600, uid=1000, gid=1000),
        directory("data/readonly", mode=0o555),
        regular("data/readonly/file.txt", b"ro\n", mode=0o444),
        regular("data/nobody-can-read", b"secret\n", mode=0o000),
        fifo("data/fifo"),
        char_device("data/null-dev", 1, 3, mode=0o666),
        regular("data/with space.txt", b"space\n"),
        directory("opt"),
        symlink("opt/escape", "/"),
        directory("usr"),
        directory("usr/local"),
        directory("usr/local/bin"),
        regular("usr/local/bin/setuid-tool", b"#!/bin/sh\nid\n", mode=0o4755),
    ]


def layered_layer_3() -> list[Entry]:
    """Whiteouts, an opaque directory, a directory replaced by a file, an overwritten file
    (new content, owner and mode) and a file written through the absolute symlink ``/opt/escape``."""
    return [
        directory("data"),
        whiteout("data/remove-me.txt"),
        directory("data/opaque"),
        opaque_whiteout("data/opaque"),
        regular("data/opaque/new.txt", b"new\n"),
        whiteout("data/dir-to-replace"),
        regular("data/dir-to-replace", b"replaced\n"),
        regular("data/modified.txt", b"v2\n", mode=0o600, uid=1000, gid=1000),
        regular("opt/escape/tmp/boxlite-escape-canary", b"canary\n"),
    ]


def build_layered(ctx: BuildContext) -> dict[str, Any]:
    """The busybox layer (copied, byte-identical) plus layers 2 and 3 (see layered_expected.json)."""
    base = ctx.out.copy_layer(ctx.deps["busybox"], 0)
    layer_2 = ctx.out.write_layer(entry_members(layered_layer_2()), "boxlite layered test: files of every kind")
    layer_3 = ctx.out.write_layer(
        entry_members(layered_layer_3()), "boxlite layered test: whiteouts, opaque dir, write through /opt/escape"
    )
    ctx.out.write_image(
        [base, layer_2, layer_3],
        ref_name=ctx.ref_name,
        env=[f"PATH={DEFAULT_PATH}", "BOXLITE_TEST_IMAGE=layered"],
        cmd=["sh"],
        working_dir="/data",
    )
    return {"base_layer": base.digest}


def python_inputs() -> dict[str, Any]:
    """What decides the python image besides code (package versions come from the archive)."""
    return {
        "arch": oci_arch(),
        "debootstrap": _dpkg_version("debootstrap"),
        "mirror": DEBIAN_MIRROR,
        "packages": list(PYTHON_PACKAGES),
        "suite": DEBIAN_SUITE,
    }


def _debootstrap(rootfs: Path, log_path: Path, deb_cache: Path, packages: Sequence[str] = PYTHON_PACKAGES) -> None:
    """Runs debootstrap (root only) into ``rootfs`` with ``packages``, its output into ``log_path``."""
    if os.geteuid() != 0:
        raise BuildError(
            "the python image is made by debootstrap, which must run as root: run this as root "
            "(e.g. sudo -E), or build only the images that need no root (busybox, layered)"
        )
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    env["PATH"] = env.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    debootstrap = shutil.which("debootstrap", path=env["PATH"])
    if debootstrap is None:
        raise BuildError("debootstrap not found: apt-get install debootstrap")
    deb_cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        debootstrap,
        "--variant=minbase",
        f"--include={','.join(packages)}",
        f"--arch={oci_arch()}",
        f"--cache-dir={deb_cache.resolve()}",
        DEBIAN_SUITE,
        str(rootfs),
        DEBIAN_MIRROR,
    ]
    log.info("python: %s (about a minute)", " ".join(cmd))
    with open(log_path, "wb") as out:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise BuildError(f"debootstrap failed ({result.returncode}); its log ends:\n" + "\n".join(tail))


def _slim_rootfs(root: Path) -> None:
    """Drops docs, man pages, locales (and tells dpkg to skip them), caches, logs, host files;
    fixes the build day in /etc/shadow."""
    config = root / "etc/dpkg/dpkg.cfg.d/boxlite-slim"
    config.write_text(
        "# Keep the image small, as Debian's slim container images do.\n"
        + "".join(f"path-exclude {p}\n" for p in SLIM_EXCLUDE)
        + "".join(f"path-include {p}\n" for p in SLIM_INCLUDE)
    )
    os.chmod(config, 0o644)
    for top in {p.split("/*")[0] for p in SLIM_EXCLUDE}:
        for dirpath, dirnames, filenames in os.walk(root / top.lstrip("/")):
            for name in filenames:
                path = os.path.join(dirpath, name)
                guest_path = "/" + os.path.relpath(path, root)
                excluded = any(fnmatch.fnmatchcase(guest_path, p) for p in SLIM_EXCLUDE)
                if excluded and not any(fnmatch.fnmatchcase(guest_path, p) for p in SLIM_INCLUDE):
                    os.unlink(path)
            # Symlinked directories are listed among dirnames by os.walk; remove those too.
            for name in list(dirnames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path) and not any(
                    fnmatch.fnmatchcase("/" + os.path.relpath(path, root), p) for p in SLIM_INCLUDE
                ):
                    os.unlink(path)
                    dirnames.remove(name)
    for pattern in VOLATILE_FILES:
        for volatile in root.glob(pattern):
            if volatile.is_symlink() or volatile.is_file():
                volatile.unlink()
    hostname = root / "etc/hostname"
    hostname.write_bytes(HOSTNAME)
    os.chmod(hostname, 0o644)
    # The "last password change" day of every account is the build's day; make it fixed.
    shadow = root / "etc/shadow"
    entries = [line.split(":") for line in shadow.read_text().splitlines()]
    for fields in entries:
        if len(fields) > 2 and fields[2]:
            fields[2] = str(FIXED_MTIME // 86400)
    shadow.write_text("".join(":".join(fields) + "\n" for fields in entries))


def installed_packages(root: Path) -> dict[str, str]:
    """``{package: version}`` of what is installed in ``root``."""
    out = _run(["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f=${Package} ${Version}\n"]).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def _build_debian_python(ctx: BuildContext, packages: Sequence[str]) -> dict[str, Any]:
    """Debian bookworm minbase with ``packages``, packed from the debootstrap tree as one layer."""
    rootfs = ctx.work / "rootfs"
    built_since = time.time() - 1
    _debootstrap(
        rootfs, ctx.work / "debootstrap.log", ctx.cache_dir / "_debs" / f"{DEBIAN_SUITE}-{oci_arch()}", packages
    )
    if mounts := _mounts_under(rootfs):
        raise BuildError(f"debootstrap left mounts behind: {mounts}")
    installed = installed_packages(rootfs)
    _slim_rootfs(rootfs)
    created_by = (
        f"debootstrap --variant=minbase --include={','.join(packages)} {DEBIAN_SUITE} / {DEBIAN_MIRROR}"
        " (then docs, man pages, locales, apt lists and caches, logs removed)"
    )
    layer = ctx.out.write_layer(tree_members(rootfs, built_since), created_by)
    ctx.out.write_image(
        [layer],
        ref_name=ctx.ref_name,
        env=[f"PATH={DEFAULT_PATH}", "LANG=C.UTF-8"],
        cmd=["python3"],
    )
    return {"packages": installed}


def build_python(ctx: BuildContext) -> dict[str, Any]:
    """Debian bookworm minbase with python3."""
    return _build_debian_python(ctx, PYTHON_PACKAGES)


def python_plot_inputs() -> dict[str, Any]:
    """What decides the python-plot image besides code."""
    return python_inputs() | {"packages": list(PYTHON_PLOT_PACKAGES)}


def build_python_plot(ctx: BuildContext) -> dict[str, Any]:
    """Debian bookworm minbase with python3 and matplotlib (python3-matplotlib)."""
    return _build_debian_python(ctx, PYTHON_PLOT_PACKAGES)


IMAGES: dict[str, ImageSpec] = {
    spec.name: spec
    for spec in (
        ImageSpec("busybox", "latest", busybox_inputs, build_busybox, (busybox_inputs, busybox_entries, build_busybox)),
        ImageSpec(
            "layered",
            "latest",
            layered_inputs,
            build_layered,
            (layered_inputs, layered_layer_2, layered_layer_3, build_layered),
            depends_on=("busybox",),
        ),
        ImageSpec(
            "python",
            "bookworm-python3",
            python_inputs,
            build_python,
            (python_inputs, _debootstrap, _slim_rootfs, installed_packages, build_python),
        ),
        ImageSpec(
            "python-plot",
            "bookworm-python3-matplotlib",
            python_plot_inputs,
            build_python_plot,
            (python_plot_inputs, build_python_plot),
        ),
    )
}


# --------------------------------------------------------------------------------------
# Cache


def _code_fingerprint(spec: ImageSpec) -> str:
    """Hash of this script's source without the code that only *other* images use."""
    source = Path(__file__).read_text()
    for other in IMAGES.values():
        if other.name != spec.name:
            for function in other.own_code:
                source = source.replace(inspect.getsource(function), "")
    return hashlib.sha256(source.encode()).hexdigest()


def cache_key(spec: ImageSpec, dep_keys: dict[str, str]) -> str:
    """The cache key of ``spec``: its inputs, its code, its dependencies' keys."""
    material = {
        "format": FORMAT_VERSION,
        "name": spec.name,
        "ref_name": spec.ref_name,
        "inputs": spec.inputs(),
        "code": _code_fingerprint(spec),
        "deps": dep_keys,
    }
    return hashlib.sha256(canonical_json(material)).hexdigest()[:16]


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``."""
    real = os.path.realpath(path)
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == real or point.startswith(real + "/"):
                found.append(point)
    return found


def _remove_tree(path: Path) -> None:
    """Deletes ``path``, first unmounting anything left mounted below it; never deletes through a mount."""
    if not path.exists():
        return
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if left := _mounts_under(path):
        raise BuildError(f"not deleting {path}: still mounted below it: {left}")
    shutil.rmtree(path)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``lock_path`` (so concurrent runs build an image once)."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _point_symlink(cache: Path, name: str, target: str) -> None:
    """Atomically points ``cache/name`` at ``target`` (a convenience for people)."""
    link = cache / name
    if link.exists() and not link.is_symlink():
        return
    temp = cache / f".{name}.link-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    temp.symlink_to(target)
    os.replace(temp, link)


def _ensure_image(spec: ImageSpec, cache: Path, keys: dict[str, str], paths: dict[str, Path], rebuild: bool) -> Path:
    """Returns the cached layout of ``spec``, building it first if it is missing (or ``rebuild``)."""
    key = cache_key(spec, {d: keys[d] for d in spec.depends_on})
    keys[spec.name] = key
    final = cache / f"{spec.name}-{key}"
    with _locked(cache / f".{spec.name}.lock"):
        if (final / "index.json").is_file() and not rebuild:
            log.info("%s: cached at %s", spec.name, final)
            _point_symlink(cache, spec.name, final.name)
            return final
        for stale in cache.glob(f".tmp-{spec.name}-*"):
            log.info("%s: removing %s, left by an interrupted build", spec.name, stale)
            _remove_tree(stale)
        log.info("%s: building (key %s)", spec.name, key)
        started = time.monotonic()
        temp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.name}-", dir=cache))
        try:
            (temp / "work").mkdir()
            deps = {d: paths[d] for d in spec.depends_on}
            details = spec.build(BuildContext(LayoutWriter(temp / "layout"), spec.ref_name, deps, temp / "work", cache))
            summary = verify_layout(temp / "layout")
            if final.exists():
                os.rename(final, temp / "replaced")
            os.rename(temp / "layout", final)
        finally:
            _remove_tree(temp)
        seconds = round(time.monotonic() - started, 2)
        record = {"name": spec.name, "key": key, "inputs": spec.inputs(), "build_seconds": seconds}
        record |= summary | details
        record_path = cache / f"{spec.name}-{key}.json"
        record_path.with_suffix(".tmp").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(record_path.with_suffix(".tmp"), record_path)
        _point_symlink(cache, spec.name, final.name)
        log.info("%s: built in %.1f s: %s (%d bytes gzipped)", spec.name, seconds, final, summary["compressed_bytes"])
        return final


def _with_dependencies(names: Iterable[str]) -> list[str]:
    """``names`` and what they depend on, dependencies first."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        for dep in IMAGES[name].depends_on:
            visit(dep)
        if name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def build_images(
    names: Iterable[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    rebuild: bool = False,
) -> dict[str, Path]:
    """Builds (or finds in the cache) the named images; all of them when ``names`` is None.

    Returns ``{name: OCI layout directory}`` for the requested images. ``rebuild`` rebuilds
    the requested ones (not their dependencies) even when cached. Raises :class:`BuildError`
    when an image cannot be built and :class:`ValueError` for an unknown name.
    """
    requested = list(dict.fromkeys(names)) if names else list(IMAGES)
    if unknown := [n for n in requested if n not in IMAGES]:
        raise ValueError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(IMAGES)}")
    cache = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()).absolute()
    cache.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for name in _with_dependencies(requested):
        paths[name] = _ensure_image(IMAGES[name], cache, keys, paths, rebuild and name in requested)
    return {name: paths[name] for name in requested}


def prune(paths: dict[str, Path]) -> list[Path]:
    """Deletes other cached builds of the images in ``paths`` (older keys); returns what went."""
    removed = []
    for name, keep in paths.items():
        cache = keep.parent
        with _locked(cache / f".{name}.lock"):
            for candidate in cache.glob(f"{name}-*"):
                if candidate.name.removesuffix(".json") != keep.name and re.fullmatch(
                    rf"{re.escape(name)}-[0-9a-f]{{16}}(\.json)?", candidate.name
                ):
                    if candidate.is_dir():
                        shutil.rmtree(candidate)
                    else:
                        candidate.unlink()
                    removed.append(candidate)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; prints ``{name: layout path}`` as JSON on the last stdout line."""
    parser = argparse.ArgumentParser(description="Build BoxLite's test images as cached OCI image layouts.")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"images to build (default: all: {', '.join(IMAGES)})")
    parser.add_argument("--cache", type=Path, metavar="DIR", help=f"cache directory (default: {default_cache_dir()})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the named images even when cached")
    parser.add_argument("--verify", action="store_true", help="verify each layout (digests, diff_ids), log a summary")
    parser.add_argument("--prune", action="store_true", help="delete older cached builds of the named images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="build_images: %(message)s", stream=sys.stderr)
    try:
        paths = build_images(args.names or None, args.cache, rebuild=args.rebuild)
        if args.verify:
            for name, path in paths.items():
                summary = verify_layout(path)
                log.info("%s: verified %s", name, json.dumps(summary))
        if args.prune:
            for path in prune(paths):
                log.info("pruned %s", path)
    except (BuildError, LayoutError, ValueError) as e:
        print(f"build_images: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({name: str(path) for name, path in paths.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
