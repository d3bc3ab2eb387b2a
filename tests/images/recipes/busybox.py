"""``busybox``: one layer: the static busybox of Debian's ``busybox-static`` package, a symlink in
/bin for each of its applets, /etc/passwd and /etc/group, the usual directories. No root needed."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imagebuild.common import DEFAULT_PATH, HOSTNAME, BuildError, oci_arch, run_tool
from imagebuild.entries import Entry, directory, entry_members, regular, symlink
from imagebuild.spec import BuildContext, ImageSpec

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"app:x:1000:1000:app:/home/app:/bin/sh\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = b"root:x:0:\ntty:x:5:\napp:x:1000:\nnogroup:x:65534:\n"
HOSTS = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


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
    version = run_tool([binary_path]).stdout.splitlines()[0].split(" multi-call")[0]
    applets = sorted(set(run_tool([binary_path, "--list"]).stdout.split()) - {"busybox"})
    if not applets or any("/" in a for a in applets):
        raise BuildError(f"{binary_path} --list gave an unusable applet list")
    entries = sorted(busybox_entries(binary_path.read_bytes(), applets), key=lambda e: e.path)
    layer = ctx.out.write_layer(
        entry_members(entries), f"{version}: /bin/busybox and {len(applets)} applet symlinks, /etc files"
    )
    ctx.out.write_image([layer], ref_name=ctx.ref_name, env=[f"PATH={DEFAULT_PATH}"], cmd=["sh"])
    return {"busybox": version, "applets": len(applets)}


SPEC = ImageSpec("busybox", "latest", busybox_inputs, build_busybox)
