"""Constants, errors and small helpers shared by the image builders."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: Timestamp of every synthetic entry and of everything made during a build:
#: 2024-01-01T00:00:00Z, after 1980 so that zip archives of image files still work.
FIXED_MTIME = 1704067200
CREATED = "2024-01-01T00:00:00Z"
GZIP_LEVEL = 6
HOSTNAME = b"boxlite\n"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


class BuildError(RuntimeError):
    """An image could not be built; the message says why and what to do about it."""


class LayoutError(ValueError):
    """A directory is not a valid OCI image layout."""


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


def run_tool(cmd: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing text output; raise :class:`BuildError` with its stderr on failure."""
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as e:
        raise BuildError(f"{cmd[0]} not found") from e
    except subprocess.CalledProcessError as e:
        raise BuildError(f"{' '.join(map(str, cmd))} failed ({e.returncode}): {e.stderr.strip()}") from e


def dpkg_version(package: str) -> str | None:
    """The installed version of a Debian package, or None."""
    try:
        return run_tool(["dpkg-query", "-W", "-f=${Version}", package]).stdout.strip() or None
    except BuildError:
        return None


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``."""
    real = os.path.realpath(path)
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == real or point.startswith(real + "/"):
                found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """Deletes ``path``, first unmounting anything left mounted below it; never deletes through a mount."""
    if not path.exists():
        return
    for point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if left := mounts_under(path):
        raise BuildError(f"not deleting {path}: still mounted below it: {left}")
    shutil.rmtree(path)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``lock_path`` (so concurrent runs build an image once)."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
