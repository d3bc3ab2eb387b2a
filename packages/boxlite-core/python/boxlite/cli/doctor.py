"""``boxlite doctor`` (what a box needs on this host, checked, explained and timed) and
``boxlite info`` (versions and paths).

Each check has a status: ``ok``, ``warn`` (boxes run, but something is slow or at risk),
``fail`` (a box cannot run: the exit code is 1) or ``skip`` (it needs something that failed).
Every check that is not ``ok`` names the fix."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from .._install import install_hint
from ..errors import BoxliteError
from ..options import Options
from ..runtime import GUEST_DIR, Boxlite

#: Seconds one registry check may take (name lookup, connection and answer together).
REGISTRY_TIMEOUT = 3.0
#: Free space in BOXLITE_HOME below which boxes cannot run (a base disk and overlays), and
#: below which doctor warns.
MIN_FREE_BYTES = 1 << 30
LOW_FREE_BYTES = 4 << 30
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@dataclass
class Check:
    """One finding: what was checked, its status, what was found and, unless ok, the fix."""

    name: str
    status: str
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def which(env_var: str | None, name: str, extra_dirs: tuple[str, ...] = ()) -> Path | None:
    """Where the engine finds ``name``: ``env_var`` when set, else ``PATH`` (then ``extra_dirs``)."""
    if env_var and os.environ.get(env_var):
        path = Path(os.environ[env_var])
        return path if path.is_file() else None
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), *extra_dirs]
    for d in dirs:
        if d and (Path(d) / name).is_file():
            return Path(d) / name
    return None


def qemu_binary() -> Path | None:
    return which("BOXLITE_QEMU", f"qemu-system-{platform.machine()}")


def tool_version(binary: Path) -> str:
    """The first line of ``binary --version`` (empty when it does not answer in 10 s)."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def guest_dir() -> Path:
    return Path(os.environ.get("BOXLITE_GUEST_DIR") or GUEST_DIR)


def kernel_release(vmlinux: Path) -> str | None:
    """The release of a Linux kernel image (its ``Linux version X`` banner)."""
    try:
        match = re.search(rb"Linux version (\S+)", vmlinux.read_bytes())
    except OSError:
        return None
    return match.group(1).decode(errors="replace") if match else None


def home_dir() -> Path:
    return Path(os.environ.get("BOXLITE_HOME") or Path.home() / ".boxlite")


def mirrors() -> dict[str, list[str]]:
    """``BOXLITE_REGISTRY_MIRRORS`` as registry -> mirror URLs (malformed entries are kept as
    their text, for the check to report)."""
    found: dict[str, list[str]] = {}
    for item in filter(None, (s.strip() for s in os.environ.get("BOXLITE_REGISTRY_MIRRORS", "").split(","))):
        registry, _, url = item.partition("=")
        found.setdefault(registry.strip(), []).append(url.strip())
    return found


def _probe_url(url: str) -> tuple[bool, str]:
    """Whether a registry endpoint answers at ``/v2/`` (200 or 401 both mean a registry)."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False, f"{url!r} is not an http(s) URL"
    try:
        with urllib.request.urlopen(f"{parts.scheme}://{parts.netloc}/v2/", timeout=REGISTRY_TIMEOUT) as answer:
            return True, f"answers ({answer.status})"
    except urllib.error.HTTPError as e:
        return e.code in (200, 401), f"answers ({e.code})"
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return False, f"unreachable: {reason}"


def _bounded(probe: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    """``probe()`` in a thread, given up after ``REGISTRY_TIMEOUT`` plus a second (a name lookup
    cannot be interrupted, so the thread is left behind rather than waited for)."""
    answer: list[tuple[bool, str]] = []
    thread = threading.Thread(target=lambda: answer.append(probe()), daemon=True)
    thread.start()
    thread.join(REGISTRY_TIMEOUT + 1)
    return answer[0] if answer else (False, f"no answer within {REGISTRY_TIMEOUT:.0f} s")


def check_registries() -> Check:
    configured = mirrors()
    targets = [(f"{url} (mirror of {registry})", url) for registry, urls in configured.items() for url in urls]
    if "docker.io" not in configured:
        targets.append(("docker.io (the default registry)", "https://docker.io"))
    results: dict[str, tuple[bool, str]] = {}
    threads = [
        threading.Thread(
            target=lambda label=label, url=url: results.__setitem__(label, _bounded(lambda: _probe_url(url)))
        )
        for label, url in targets
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REGISTRY_TIMEOUT + 2)
    lines = [f"{label}: {results.get(label, (False, 'no answer'))[1]}" for label, _ in targets]
    reachable = [label for label, _ in targets if results.get(label, (False, ""))[0]]
    data = {"mirrors": configured, "reachable": reachable, "checked": [label for label, _ in targets]}
    if len(reachable) == len(targets):
        return Check("registries", "ok", "; ".join(lines), data=data)
    return Check(
        "registries",
        "warn",
        "; ".join(lines),
        "pulls from an unreachable registry fail; local images (OCI layouts, `docker save` archives) still run. "
        "Set BOXLITE_REGISTRY_MIRRORS=docker.io=http://MIRROR:PORT to pull through a mirror you can reach",
        data,
    )


def check_tools() -> list[Check]:
    checks = []
    qemu = qemu_binary()
    if qemu is None:
        name = os.environ.get("BOXLITE_QEMU") or f"qemu-system-{platform.machine()}"
        checks.append(Check("qemu", "fail", f"{name} not found", f"{install_hint('qemu')} (or set BOXLITE_QEMU)"))
    else:
        version = tool_version(qemu)
        checks.append(Check("qemu", "ok", f"{qemu}: {version}", data={"path": str(qemu), "version": version}))
    qemu_img = which("BOXLITE_QEMU_IMG", "qemu-img")
    if qemu_img is None:
        checks.append(
            Check("qemu-img", "fail", "qemu-img not found", f"{install_hint('qemu-img')} (or set BOXLITE_QEMU_IMG)")
        )
    else:
        checks.append(Check("qemu-img", "ok", str(qemu_img), data={"path": str(qemu_img)}))
    passt = which("BOXLITE_PASST", "passt")
    if passt is None:
        fix = f"{install_hint('passt')} (or set BOXLITE_PASST); boxes without a network (--network none) run without it"
        checks.append(Check("passt", "fail", "passt not found: boxes with networking (the default) cannot start", fix))
    else:
        checks.append(Check("passt", "ok", str(passt), data={"path": str(passt)}))
    found = {name: which(None, name, _SBIN) for name in ("mke2fs", "debugfs")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        detail = f"{', '.join(missing)} not found: base disks cannot be built"
        checks.append(Check("e2fsprogs", "fail", detail, install_hint("e2fsprogs")))
    else:
        paths = {name: str(path) for name, path in found.items()}
        checks.append(Check("e2fsprogs", "ok", ", ".join(paths.values()), data=paths))
    return checks


def check_guest() -> Check:
    directory = guest_dir()
    missing = [f for f in ("vmlinux", "initramfs.cpio") if not (directory / f).is_file()]
    if missing:
        fix = (
            "reinstall boxlite-core (the wheel ships them), or `make guest` in a source checkout, "
            "or set BOXLITE_GUEST_DIR"
        )
        return Check("guest files", "fail", f"{', '.join(missing)} missing from {directory}", fix)
    release = kernel_release(directory / "vmlinux")
    initramfs_kib = (directory / "initramfs.cpio").stat().st_size >> 10
    return Check(
        "guest files",
        "ok",
        f"{directory}: kernel {release or 'of unknown release'}, initramfs {initramfs_kib} KiB",
        data={"dir": str(directory), "kernel_release": release},
    )


def check_kvm() -> Check:
    if platform.system() != "Linux":
        return Check("/dev/kvm", "skip", f"not Linux ({platform.system()})")
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return Check(
            "/dev/kvm",
            "warn",
            "absent: no hardware virtualisation, boxes run under TCG emulation (slow)",
            "enable virtualisation (VT-x/AMD-V) in the BIOS and load kvm_intel or kvm_amd; "
            "in a VM, enable nested virtualisation on its host",
            {"present": False},
        )
    try:
        os.close(os.open(kvm, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return Check(
            "/dev/kvm",
            "warn",
            f"present but not usable by this user ({e.strerror})",
            "add yourself to its group: `sudo usermod -aG kvm $USER`, then log in again",
            {"present": True, "usable": False},
        )
    return Check("/dev/kvm", "ok", "present and usable", data={"present": True, "usable": True})


def check_home() -> Check:
    home = home_dir()
    existing = home
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(
            "BOXLITE_HOME", "fail", f"{home}: {existing} is not writable", "set BOXLITE_HOME to a directory you own"
        )
    free = shutil.disk_usage(existing).free
    data: dict[str, Any] = {"path": str(home), "free_bytes": free}
    detail = f"{home}: {free / (1 << 30):.1f} GiB free"
    if home.exists():
        mode = home.stat().st_mode & 0o777
        data["mode"] = f"{mode:o}"
        detail += f", mode {mode:o}"
        if mode & 0o077:
            return Check("BOXLITE_HOME", "warn", detail + " (open to other users)", f"`chmod 700 {home}`", data)
    if free < MIN_FREE_BYTES:
        return Check(
            "BOXLITE_HOME", "fail", detail, "free at least 1 GiB there (`boxlite prune`), or move BOXLITE_HOME", data
        )
    if free < LOW_FREE_BYTES:
        return Check(
            "BOXLITE_HOME", "warn", detail, "images need about twice their size while a base disk is built", data
        )
    return Check("BOXLITE_HOME", "ok", detail, data=data)


async def check_boot(kvm: Check) -> list[Check]:
    """The accelerator verdict (a real probe boot, cached per host) and one boot of the guest."""
    try:
        runtime = Boxlite(Options())
        choice = await runtime.accelerator()
    except BoxliteError as e:
        return [Check("accelerator", "fail", str(e), "see the message"), Check("test boot", "skip", "no runtime")]
    accel, reason = choice.get("accel", "?"), choice.get("reason", "")
    data = {"accel": accel, "reason": reason}
    if accel == "tcg" and "BOXLITE_ACCEL" not in reason:
        fix = kvm.fix or (
            "/dev/kvm works but the probe boot failed: nested or paravirtualised KVM (kvm_pvm) cannot boot "
            "stock kernels; ask for real nested virtualisation, or accept emulation (BOXLITE_ACCEL=tcg skips the probe)"
        )
        accel_check = Check("accelerator", "warn", f"tcg (emulation, slow): {reason}", fix, data)
    else:
        accel_check = Check("accelerator", "ok", f"{accel}: {reason}", data=data)
    tcg = Check("tcg fallback", "ok", "QEMU's emulation always works (slow): what boxes use without an accelerator")
    try:
        ms = await runtime.bare_boot_ms()
    except BoxliteError as e:
        return [
            accel_check,
            tcg,
            Check("test boot", "fail", str(e), "see `boxlite logs` of a box, or the message above"),
        ]
    return [
        accel_check,
        tcg,
        Check("test boot", "ok", f"kernel and agent up in {ms:.0f} ms on {accel}", data={"ms": ms}),
    ]


async def run_checks() -> list[Check]:
    checks = check_tools()
    checks.append(check_guest())
    kvm = check_kvm()
    checks.append(kvm)
    home = check_home()
    checks.append(home)
    needed = {"qemu", "guest files", "BOXLITE_HOME"}
    blocked = [c.name for c in checks if c.name in needed and c.status == "fail"]
    if blocked:
        skipped = f"needs {', '.join(blocked)}"
        checks += [Check(n, "skip", skipped) for n in ("accelerator", "tcg fallback", "test boot")]
    else:
        checks += await check_boot(kvm)
    checks.append(check_registries())
    return checks


async def doctor(args: argparse.Namespace) -> int:
    checks = await run_checks()
    ok = not any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"[{_MARKS[c.status]}] {c.name}: {c.detail}")
            if c.fix and c.status != "ok":
                print(f"       fix: {c.fix}")
        print("boxes can run on this host" if ok else "boxes cannot run on this host: fix the FAIL lines above")
    return 0 if ok else 1


async def info(args: argparse.Namespace) -> int:
    qemu = qemu_binary()
    directory = guest_dir()
    facts: dict[str, Any] = {
        "boxlite": __version__,
        "python": sys.version.split()[0],
        "qemu": tool_version(qemu) if qemu else None,
        "qemu_path": str(qemu) if qemu else None,
        "passt_path": str(p) if (p := which("BOXLITE_PASST", "passt")) else None,
        "guest_kernel": kernel_release(directory / "vmlinux"),
        "guest_dir": str(directory),
        "home": str(home_dir()),
        "registry_mirrors": mirrors(),
        "accelerator": None,
    }
    if qemu is not None:
        try:
            choice = await Boxlite(Options()).accelerator()
            facts["accelerator"] = f"{choice.get('accel')} ({choice.get('reason')})"
        except BoxliteError as e:
            facts["accelerator"] = f"unknown: {e}"
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            print(f"{key.ljust(width)}  {value if value not in (None, {}) else '-'}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check what boxes need on this host (exit code 1 when a box cannot run)")
    p.add_argument("--json", action="store_true", help="the checks as JSON")
    p.set_defaults(plain=doctor)
    p = sub.add_parser("info", help="versions (boxlite, QEMU, guest kernel), paths and the accelerator")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(plain=info)


__all__ = ["Check", "doctor", "info", "install_hint", "run_checks"]
