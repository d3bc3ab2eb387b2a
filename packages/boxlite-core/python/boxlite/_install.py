"""Which package provides a host tool on this machine's distribution, and the command that
installs it (read from ``/etc/os-release``; macOS is Homebrew)."""

from __future__ import annotations

import platform
from pathlib import Path

#: Package names per distribution family, for each tool a box needs.
PACKAGES: dict[str, dict[str, str]] = {
    "qemu": {
        "debian": "qemu-system-x86" if platform.machine() in ("x86_64", "AMD64") else "qemu-system-arm",
        "fedora": "qemu-system-x86-core" if platform.machine() in ("x86_64", "AMD64") else "qemu-system-aarch64-core",
        "arch": "qemu-system-x86" if platform.machine() in ("x86_64", "AMD64") else "qemu-system-aarch64",
        "macos": "qemu",
    },
    "qemu-img": {"debian": "qemu-utils", "fedora": "qemu-img", "arch": "qemu-img", "macos": "qemu"},
    "passt": {"debian": "passt", "fedora": "passt", "arch": "passt"},
    "e2fsprogs": {"debian": "e2fsprogs", "fedora": "e2fsprogs", "arch": "e2fsprogs", "macos": "e2fsprogs"},
}

_INSTALL = {
    "debian": "sudo apt-get install {}",
    "fedora": "sudo dnf install {}",
    "arch": "sudo pacman -S {}",
    "macos": "brew install {}",
}

_NAMES = {"debian": "Debian/Ubuntu", "fedora": "Fedora", "arch": "Arch", "macos": "macOS (Homebrew)"}


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    """The fields of ``/etc/os-release`` (empty when there is none)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def family(release: dict[str, str] | None = None) -> str | None:
    """``debian``, ``fedora``, ``arch`` or ``macos`` for this host; None for another system."""
    if platform.system() == "Darwin":
        return "macos"
    fields = os_release() if release is None else release
    ids = [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]
    for known, names in (
        ("debian", ("debian", "ubuntu")),
        ("fedora", ("fedora", "rhel", "centos")),
        ("arch", ("arch",)),
    ):
        if any(i in names for i in ids):
            return known
    return None


def install_hint(tool: str, release: dict[str, str] | None = None) -> str:
    """How to install ``tool`` (a key of :data:`PACKAGES`) here: the package and the command,
    or every known distribution's command when this one is not known."""
    packages = PACKAGES[tool]
    here = family(release)
    if here is not None:
        if here not in packages:
            return f"{tool} is not packaged for {_NAMES[here]}"
        package = packages[here]
        return f"install the {package} package: `{_INSTALL[here].format(package)}`"
    listed = "; ".join(f"{_NAMES[f]}: `{_INSTALL[f].format(p)}`" for f, p in packages.items())
    return f"install {tool} with your system's package manager ({listed})"


__all__ = ["PACKAGES", "family", "install_hint", "os_release"]
