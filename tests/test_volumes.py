"""Volumes: host directories shared into the box over 9p; read-only ones refuse writes in the
guest (and in QEMU), read-write ones write through to the host, and root in the box cannot plant
host files the host user did not expect (setuid files, device nodes, fifos, foreign owners,
symlinks), whether the engine runs as root or as an unprivileged user. Also: as many volumes as
the machine has device slots for (more are refused), and the guest's clock comes from the host
even when the last slot costs it its RTC."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boxlite
import pytest

NOBODY = 65534

# Root in the box tries everything QEMU's `security_model=none` would have applied to the host
# file itself. `$1` is the volume's path in the box; `host-link` is a symlink to the host's /etc
# that the host put into the volume beforehand. Prints the guest's view of what it made.
ATTACK = r"""
set -e
cd "$1"
cat /bin/busybox > sh-suid && chmod 4755 sh-suid
cat /bin/busybox > sh-sgid && chmod 2755 sh-sgid
mknod disk b 8 0 && chmod 666 disk
mknod null c 1 3
mkfifo fifo
echo root > owned && chown 0:0 owned
echo other > foreign && chown 1234:5678 foreign
mkdir dir && chown 1234:5678 dir && chmod 7777 dir
ln -s /etc x && echo canary > x/boxlite-canary
ln -s /etc/passwd y && echo boxlite >> y
if echo canary > host-link/boxlite-canary-2 2>/dev/null; then echo "host-link followed"; fi
stat -c '%n %A %u:%g %t:%T' sh-suid sh-sgid disk null fifo owned foreign dir x y
echo "x -> $(readlink x)" "y -> $(readlink y)" "canary: $(cat /etc/boxlite-canary)"
"""

# The guest's view afterwards: what it set is what it sees (kept in extended attributes).
GUEST_VIEW = [
    "sh-suid -rwsr-xr-x 0:0 0:0",
    "sh-sgid -rwxr-sr-x 0:0 0:0",
    "disk brw-rw-rw- 0:0 8:0",
    "null crw-r--r-- 0:0 1:3",
    "fifo prw-r--r-- 0:0 0:0",
    "owned -rw-r--r-- 0:0 0:0",
    "foreign -rw-r--r-- 1234:5678 0:0",
    "dir drwsrwsrwt 1234:5678 0:0",
    "x lrwxrwxrwx 0:0 0:0",
    "y lrwxrwxrwx 0:0 0:0",
    "x -> /etc y -> /etc/passwd canary: canary",
]


@pytest.fixture(scope="module")
async def volume_box(runtime: boxlite.Boxlite, busybox: str, tmp_path_factory: pytest.TempPathFactory) -> boxlite.Box:
    data = tmp_path_factory.mktemp("vol-ro")
    (data / "input.txt").write_text("from the host\n")
    data.chmod(0o755)  # readable by users other than root in the box too
    out = tmp_path_factory.mktemp("vol-rw")
    box = await runtime.create(
        boxlite.BoxOptions(
            rootfs_path=busybox,
            memory_mib=256,
            volumes=[(str(data), "/data", "ro"), (str(out), "/out")],
        )
    )
    box.test_dirs = (data, out)  # type: ignore[attr-defined]
    yield box  # type: ignore[misc]
    await box.stop()


@pytest.mark.hostile
async def test_read_only_volume_is_readable_and_refuses_writes(volume_box: boxlite.Box) -> None:
    data, _ = volume_box.test_dirs  # type: ignore[attr-defined]
    assert (await volume_box.run("cat", ["/data/input.txt"])).stdout == "from the host\n"
    # The box sees the host's owners and modes of files the host put there (0644 here).
    as_user = await volume_box.run("cat", ["/data/input.txt"], user="1000:1000")
    assert as_user.stdout == "from the host\n", as_user.stderr
    write = await volume_box.run("sh", ["-c", "echo x > /data/new.txt"])
    assert write.exit_code != 0 and "Read-only file system" in write.stderr
    # Root in the box may remount read-write; QEMU (readonly=on) still refuses the write.
    remount = await volume_box.run("mount", ["-o", "remount,rw", "/data"])
    assert remount.exit_code == 0, remount.stderr
    mounts = (await volume_box.run("cat", ["/proc/mounts"])).stdout
    assert any(line.split()[1] == "/data" and "rw" in line.split()[3].split(",") for line in mounts.splitlines())
    again = await volume_box.run("sh", ["-c", "echo x > /data/new.txt"])
    assert again.exit_code != 0 and "Read-only file system" in again.stderr, again
    assert not (data / "new.txt").exists()


async def test_read_write_volume_writes_through_to_the_host(volume_box: boxlite.Box) -> None:
    _, out = volume_box.test_dirs  # type: ignore[attr-defined]
    result = await volume_box.run("sh", ["-c", "mkdir -p /out/sub && echo result > /out/sub/r.txt"])
    assert result.exit_code == 0, result.stderr
    assert (Path(out) / "sub" / "r.txt").read_text() == "result\n"
    (Path(out) / "from-host.txt").write_text("live\n")
    assert (await volume_box.run("cat", ["/out/from-host.txt"])).stdout == "live\n"


async def test_guest_clock_follows_the_host(volume_box: boxlite.Box) -> None:
    guest = int((await volume_box.run("date", ["+%s"])).stdout)
    assert abs(guest - time.time()) < 30


async def test_a_box_with_two_volumes_keeps_its_rtc(volume_box: boxlite.Box) -> None:
    # Its seven devices leave the RTC's interrupt alone (without an RTC the guest boots ~1 s slower).
    assert (await volume_box.run("ls", ["/dev/rtc0"])).exit_code == 0


async def test_the_most_volumes_all_mount_and_the_clock_follows_the_host_without_an_rtc(
    runtime: boxlite.Boxlite, busybox: str, tmp_path: Path
) -> None:
    dirs = []
    for i in range(4):  # the most a box with a network has room for
        (tmp_path / f"v{i}").mkdir()
        (tmp_path / f"v{i}" / "f").write_text(f"{i}\n")
        dirs.append((str(tmp_path / f"v{i}"), f"/mnt/v{i}"))
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, volumes=dirs))
    try:
        assert (await box.run("sh", ["-c", "cat /mnt/v0/f /mnt/v1/f /mnt/v2/f /mnt/v3/f"])).stdout == "0\n1\n2\n3\n"
        # Eight devices: the last takes the RTC's interrupt, so the box has no RTC.
        assert (await box.run("ls", ["/dev/rtc0"])).exit_code != 0
        guest = int((await box.run("date", ["+%s"])).stdout)
        assert abs(guest - time.time()) < 30
    finally:
        await box.stop()
    (tmp_path / "v4").mkdir()
    five = [*dirs, (str(tmp_path / "v4"), "/mnt/v4")]
    with pytest.raises(boxlite.InvalidOptionError, match=r"5 given, a box has room for at most 4 \(or 5 without"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, volumes=five))


async def test_bad_volumes_are_refused(runtime: boxlite.Boxlite, busybox: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(boxlite.InvalidOptionError, match="not a directory"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, volumes=[(str(tmp_path / "file"), "/f")]))
    with pytest.raises(boxlite.InvalidOptionError, match="absolute"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, volumes=[(str(tmp_path), "rel")]))
    with pytest.raises(boxlite.InvalidOptionError, match="mode"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, volumes=[(str(tmp_path), "/x", "rx")]))


def _host_etc() -> tuple[bytes, bool]:
    """What the attack must leave alone: the host's /etc/passwd and the absence of canaries."""
    canaries = any(Path("/etc", n).exists() for n in ("boxlite-canary", "boxlite-canary-2"))
    return hashlib.sha256(Path("/etc/passwd").read_bytes()).digest(), canaries


def _assert_nothing_planted(out: Path, uid: int, gid: int) -> None:
    """Every entry the box made in ``out`` is a plain file or directory owned by the host user,
    with no setuid/setgid bit and writable by its owner only; its symlinks are files holding
    the target, and the host's own symlink is untouched."""
    found = set()
    for root, dirs, files in os.walk(out, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(root, name)
            found.add(name)
            st = os.lstat(path)
            if name == "host-link":
                assert stat.S_ISLNK(st.st_mode) and os.readlink(path) == "/etc"
                continue
            assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode), f"{path}: {stat.filemode(st.st_mode)}"
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), f"{path}: {stat.filemode(st.st_mode)}"
            assert not st.st_mode & 0o077, f"{path} is open to others on the host: {stat.filemode(st.st_mode)}"
            assert (st.st_uid, st.st_gid) == (uid, gid), f"{path} is owned by {st.st_uid}:{st.st_gid}"
    assert {"sh-suid", "disk", "null", "fifo", "foreign", "dir", "x", "y"} <= found, found
    # The guest's symlinks are plain files holding their targets; nothing reached the host's /etc.
    assert (out / "x").read_text() == "/etc" and (out / "y").read_text() == "/etc/passwd"


def _guest_view(stdout: str) -> list[str]:
    return [" ".join(line.split()) for line in stdout.splitlines() if line.strip()]


@pytest.mark.hostile
async def test_root_in_the_box_cannot_plant_host_files(runtime: boxlite.Boxlite, busybox: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "host-link").symlink_to("/etc")
    before = _host_etc()
    async with boxlite.SimpleBox(
        rootfs_path=busybox, memory_mib=256, volumes=[(str(out), "/out")], runtime=runtime
    ) as box:
        result = await box.exec("sh", "-c", ATTACK, "sh", "/out")
        # The host first, the guest's view next.
        assert _host_etc() == before
        _assert_nothing_planted(out, os.geteuid(), os.getegid())
        assert result.exit_code == 0, result.stderr
        assert _guest_view(result.stdout) == GUEST_VIEW
        # A box user works in a directory root in the box opened to it; it owns what it writes.
        assert (await box.exec("sh", "-c", "mkdir /out/shared && chmod 777 /out/shared")).exit_code == 0
        mine = await box.exec("sh", "-c", "echo mine > /out/shared/f; stat -c %u:%g /out/shared/f", user="1000:1000")
        assert mine.exit_code == 0 and mine.stdout == "1000:1000\n", mine
    _assert_nothing_planted(out, os.geteuid(), os.getegid())
    assert (out / "shared" / "f").read_text() == "mine\n"


# The engine as an unprivileged host user: this interpreter imports everything it needs while
# still root (the interpreter may live where that user cannot read), then drops to the user for
# good, as `setpriv --reuid --regid --clear-groups` would, before it creates any box.
UNPRIVILEGED = """
import asyncio, ctypes, json, os, sys
import boxlite

home, layout, out, script, uid = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
# The credential change left this process non-dumpable (no exec follows, unlike setpriv): the
# engine must still start passt and take its seccomp listener (it once hung here).
assert ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE

async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
    async with boxlite.SimpleBox(rootfs_path=layout, memory_mib=256, volumes=[(out, "/out")], runtime=runtime) as box:
        result = await box.exec("sh", "-c", script, "sh", "/out")
    # The host user can use what the box wrote (0600 files of its own).
    try:
        with open(os.path.join(out, "owned")) as f:
            owned = f.read()
    except OSError as e:
        owned = repr(e)
    print(json.dumps({"uid": os.geteuid(), "exit_code": result.exit_code, "stdout": result.stdout,
                      "stderr": result.stderr, "owned": owned}))

asyncio.run(main())
"""


@pytest.fixture
def nobody_dir(busybox: str) -> Iterator[Path]:
    """A directory the unprivileged user owns, reachable by it, with a copy of the busybox image."""
    base = Path(tempfile.mkdtemp(prefix="boxlite-nobody-", dir="/tmp"))
    try:
        shutil.copytree(busybox, base / "busybox")
        (base / "home").mkdir()
        (base / "out").mkdir()
        for path in [base, *base.rglob("*")]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        yield base
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="switching to another user needs root; as a non-root user the test above already runs unprivileged",
)
@pytest.mark.hostile
async def test_an_unprivileged_engine_cannot_have_host_files_planted(
    nobody_dir: Path, runtime: boxlite.Boxlite
) -> None:
    out = nobody_dir / "out"
    (out / "host-link").symlink_to("/etc")
    os.chown(out / "host-link", NOBODY, NOBODY, follow_symlinks=False)
    before = _host_etc()
    # The accelerator this host already settled on, so the child does not probe again.
    accel = (await runtime.accelerator())["accel"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(nobody_dir / "home"), "BOXLITE_ACCEL": accel}
    home, layout = str(nobody_dir / "home"), str(nobody_dir / "busybox")
    command = [sys.executable, "-c", UNPRIVILEGED, home, layout, str(out), ATTACK, str(NOBODY)]
    done = await asyncio.to_thread(
        subprocess.run, command, cwd="/", env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["uid"] == NOBODY
    assert _host_etc() == before
    _assert_nothing_planted(out, NOBODY, NOBODY)
    assert result["exit_code"] == 0, result["stderr"]
    assert _guest_view(result["stdout"]) == GUEST_VIEW
    assert result["owned"] == "root\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system without extended attributes (ramfs) needs root")
async def test_read_write_volumes_need_a_file_system_that_keeps_the_box_metadata(
    runtime: boxlite.Boxlite, busybox: str, tmp_path: Path
) -> None:
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(tmp_path)], check=True)
    try:
        with pytest.raises(boxlite.InvalidOptionError, match=r'without user extended attributes.*"ro"'):
            box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, volumes=[(str(tmp_path), "/out", "rw")]))
            await box.stop()  # only when it was wrongly accepted: free the mount
    finally:
        subprocess.run(["umount", str(tmp_path)], check=True)
