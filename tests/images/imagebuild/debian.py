"""Images made from Debian packages by debootstrap: the archive, the slimming, the packing."""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import (
    DEFAULT_PATH,
    FIXED_MTIME,
    HOSTNAME,
    BuildError,
    dpkg_version,
    locked,
    mounts_under,
    oci_arch,
    run_tool,
)
from .entries import tree_members
from .spec import BuildContext

log = logging.getLogger("build_images")


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

#: Paths dpkg is told not to install in Debian images (and that are removed after
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


def debian_inputs(packages: Sequence[str]) -> dict[str, Any]:
    """What decides a Debian image besides code (package versions come from the archive)."""
    return {
        "arch": oci_arch(),
        "debootstrap": dpkg_version("debootstrap"),
        "mirror": DEBIAN_MIRROR,
        "packages": list(packages),
        "suite": DEBIAN_SUITE,
    }


def _debootstrap(rootfs: Path, log_path: Path, deb_cache: Path, packages: Sequence[str]) -> None:
    """Runs debootstrap (root only) into ``rootfs`` with ``packages``, its output into ``log_path``."""
    if os.geteuid() != 0:
        raise BuildError(
            "Debian images are made by debootstrap, which must run as root: run this as root "
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
    log.info("%s (a minute or more)", " ".join(cmd))
    # Builds running at once share the package cache; debootstrap does not lock it.
    with locked(deb_cache.parent / f".{deb_cache.name}.lock"), open(log_path, "wb") as out:
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
    out = run_tool(["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W", "-f=${Package} ${Version}\n"]).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def build_debian_image(
    ctx: BuildContext,
    packages: Sequence[str],
    *,
    cmd: Sequence[str],
    env: Sequence[str] = (),
    customize: Callable[[Path], None] | None = None,
    working_dir: str | None = None,
) -> dict[str, Any]:
    """Debian bookworm minbase with ``packages``, packed from the debootstrap tree as one layer.

    ``customize`` runs (as root) on the tree after slimming and before packing: it adds users,
    start scripts and configuration. The image's ``Env`` is ``PATH``, ``LANG=C.UTF-8`` and ``env``.
    """
    rootfs = ctx.work / "rootfs"
    built_since = time.time() - 1
    _debootstrap(
        rootfs, ctx.work / "debootstrap.log", ctx.cache_dir / "_debs" / f"{DEBIAN_SUITE}-{oci_arch()}", packages
    )
    if mounts := mounts_under(rootfs):
        raise BuildError(f"debootstrap left mounts behind: {mounts}")
    installed = installed_packages(rootfs)
    _slim_rootfs(rootfs)
    if customize is not None:
        customize(rootfs)
    created_by = (
        f"debootstrap --variant=minbase --include={','.join(packages)} {DEBIAN_SUITE} / {DEBIAN_MIRROR}"
        " (then docs, man pages, locales, apt lists and caches, logs removed)"
    )
    layer = ctx.out.write_layer(tree_members(rootfs, built_since), created_by)
    ctx.out.write_image(
        [layer],
        ref_name=ctx.ref_name,
        env=[f"PATH={DEFAULT_PATH}", "LANG=C.UTF-8", *env],
        cmd=cmd,
        working_dir=working_dir,
    )
    return {"packages": installed}
