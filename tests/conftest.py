"""Fixtures shared by the end-to-end tests: every test here boots real VMs (under TCG on our
machines), from OCI images built locally by ``tests/images/build_images.py``."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boxlite
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))

from build_images import build_images  # noqa: E402
from local_registry import LocalRegistry  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    guest = boxlite.runtime.GUEST_DIR
    missing = [f for f in ("vmlinux", "initramfs.cpio") if not (guest / f).is_file()]
    if missing:
        raise pytest.UsageError(
            f"the guest files {missing} are missing from {guest}: run `make guest` (or `make test`, which builds them)"
        )
    if shutil.which("qemu-system-x86_64") is None:
        raise pytest.UsageError("qemu-system-x86_64 is not installed: run `make setup`")
    # A suite started as a background job of a non-interactive shell (`cmd &` in a script, nohup)
    # inherits SIGINT ignored, and so would every program a test starts: Python then installs no
    # KeyboardInterrupt handler, and the tests that press Ctrl-C on a child would wait in vain.
    # A handler here (not SIG_IGN) makes the children start with SIGINT at its default.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def images() -> dict[str, Path]:
    """OCI layouts of the test images: ``busybox``, ``python``, ``layered``."""
    return build_images()


@pytest.fixture(scope="session")
def busybox(images: dict[str, Path]) -> str:
    return str(images["busybox"])


@pytest.fixture(scope="session")
def python_image(images: dict[str, Path]) -> str:
    return str(images["python"])


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("boxlite-home")


@pytest.fixture(scope="session")
def runtime(home: Path) -> Iterator[boxlite.Boxlite]:
    """One runtime for the session, on its own home directory."""
    yield boxlite.Boxlite(boxlite.Options(home_dir=str(home)))


@pytest.fixture(scope="session")
async def shared_box(runtime: boxlite.Boxlite, busybox: str) -> AsyncIterator[boxlite.Box]:
    """One busybox box for the tests that only run commands."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    yield box
    await box.stop()


@pytest.fixture(scope="session")
async def python_box(runtime: boxlite.Boxlite, python_image: str) -> AsyncIterator[boxlite.SimpleBox]:
    """One Debian box with python3, as a SimpleBox."""
    async with boxlite.SimpleBox(rootfs_path=python_image, memory_mib=512, runtime=runtime) as box:
        yield box


@pytest.fixture(scope="session")
def registry(images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A real registry on 127.0.0.1 (Debian's docker-registry) holding the test images as
    ``library/busybox:latest``, ``library/layered:latest`` and ``library/python:slim``."""
    server = LocalRegistry(tmp_path_factory.mktemp("registry"))
    try:
        server.push(images["busybox"], "latest", "library/busybox:latest")
        server.push(images["layered"], "latest", "library/layered:latest")
        server.push(images["python"], "bookworm-python3", "library/python:slim")
        yield server
    finally:
        server.stop()


def sparse_file_digest(path: Path) -> str:
    """SHA-256 of a sparse file's contents, reading only its data: each data extent's bounds and
    bytes, then the size. Holes read as zeros, so equal digests mean equal contents, and reading
    a 4 GiB base disk this way takes milliseconds instead of half a minute."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        fd = file.fileno()
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data after `offset`: the rest is a hole
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            digest.update(start.to_bytes(8, "little") + end.to_bytes(8, "little"))
            file.seek(start)
            while start < end:
                chunk = file.read(min(end - start, 1 << 20))
                if not chunk:
                    raise AssertionError(f"{path} shrank while it was read")
                digest.update(chunk)
                start += len(chunk)
            offset = end
    digest.update(size.to_bytes(8, "little"))
    return digest.hexdigest()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes. The process may also go between the kill and the
    # read, which the kernel reports as ESRCH (ProcessLookupError) rather than ENOENT.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def vmm_command_line(box: boxlite.Box) -> str:
    """The command line of the box's VMM (QEMU), its arguments joined by spaces."""
    pid = box.info().vmm_pid
    assert pid is not None
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def boot_cache_entries(home: Path, memory_mib: int) -> list[dict[str, object]]:
    """The recorded boot cache entries of boxes with ``memory_mib``."""
    db = sqlite3.connect(home / "db" / "snapshots.db")
    with db:
        rows = [json.loads(text) for (text,) in db.execute("SELECT info FROM snapshots")]
    db.close()
    return [r for r in rows if r.get("boot_key") and r["memory_mib"] == memory_mib]


def vmms_under(home: Path) -> list[int]:
    """Live (non-zombie) QEMU processes of boxes whose home directory is ``home``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmdline and f"{home}/boxes/" in cmdline and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="session")
def plot_image() -> str:
    """The python image plus matplotlib (``python-plot``), for the agent-tool tests."""
    return str(build_images(["python-plot"])["python-plot"])


# Tool code for the kill-on-timeout tests: starts `sleep {n}` as a daemon (its own session),
# says so once it runs (Popen returns after the exec), then spins until the timeout kills it.
SPAWN_AND_SPIN = (
    "import subprocess\n"
    "subprocess.Popen(['sleep', '{n}'], start_new_session=True)\n"
    "print('spawned', flush=True)\n"
    "while True: pass"
)

# A shell loop counting in /tmp/count ten times a second, its pid in /tmp/counter.pid, for the
# tests of what a snapshot, fork or hibernation catches. It writes a new file and renames it: a
# snapshot taken between a truncation and the write would catch /tmp/count empty.
COUNTER = (
    "echo $$ > /tmp/counter.pid; i=0; "
    "while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done"
)


async def shell_output(box: boxlite.Box, script: str) -> str:
    """The stripped stdout of ``sh -c script`` in ``box``; fails the test if it exits non-zero."""
    result = await box.run("sh", ["-c", script])
    assert result.exit_code == 0, result
    return result.stdout.strip()


async def start_counter(box: boxlite.Box) -> tuple[boxlite.Execution, str]:
    """Starts :data:`COUNTER` in ``box``; its execution and its shell's pid, once it counts."""
    counter = await box.exec("sh", ["-c", COUNTER])
    while not (pid := await shell_output(box, "cat /tmp/counter.pid 2>/dev/null; true")):
        await asyncio.sleep(0.1)
    return counter, pid
