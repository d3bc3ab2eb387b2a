"""copy_in / copy_out: files and directory trees as tar streams, modes kept."""

from __future__ import annotations

import os
from pathlib import Path

import boxlite
import pytest
from boxlite.errors import CopyError


async def test_directory_round_trip_keeps_content_and_modes(shared_box: boxlite.Box, tmp_path: Path) -> None:
    src = tmp_path / "project"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "bin" / "run.sh").chmod(0o750)
    (src / "secret.txt").write_bytes(b"\x00\xffbinary")
    (src / "secret.txt").chmod(0o600)
    (src / "link").symlink_to("secret.txt")
    await shared_box.run("rm", ["-rf", "/work"])
    await shared_box.run("mkdir", ["-p", "/work"])
    await shared_box.copy_in(src, "/work")  # an existing directory: lands inside it

    listing = await shared_box.run("sh", ["-c", "cd /work/project && stat -c '%n %a' bin/run.sh secret.txt"])
    assert listing.stdout.split("\n")[:2] == ["bin/run.sh 750", "secret.txt 600"]
    assert (await shared_box.run("/work/project/bin/run.sh")).stdout == "ran\n"
    assert (await shared_box.run("readlink", ["/work/project/link"])).stdout == "secret.txt\n"

    await shared_box.run("sh", ["-c", "echo made-in-box > /work/project/new.txt"])
    back = tmp_path / "back"
    await shared_box.copy_out("/work/project", back)  # not existing: becomes the directory
    assert (back / "new.txt").read_text() == "made-in-box\n"
    assert (back / "secret.txt").read_bytes() == b"\x00\xffbinary"
    assert os.stat(back / "bin" / "run.sh").st_mode & 0o777 == 0o750
    assert os.readlink(back / "link") == "secret.txt"


async def test_single_file_in_and_out(shared_box: boxlite.Box, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "blob.bin").write_bytes(data)
    await shared_box.copy_in(tmp_path / "blob.bin", "/tmp/renamed.bin")  # not a directory: the name
    size = await shared_box.run("stat", ["-c", "%s", "/tmp/renamed.bin"])
    assert size.stdout.strip() == str(len(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    await shared_box.copy_out("/tmp/renamed.bin", out_dir)  # an existing directory: inside it
    assert (out_dir / "renamed.bin").read_bytes() == data


async def test_copy_errors_are_clear(shared_box: boxlite.Box, tmp_path: Path) -> None:
    with pytest.raises(CopyError, match="/no/such/path"):
        await shared_box.copy_out("/no/such/path", tmp_path / "x")
    with pytest.raises(CopyError, match="no such directory"):
        (tmp_path / "f").write_text("x")
        await shared_box.copy_in(tmp_path / "f", "/missing-dir/f")
    with pytest.raises(boxlite.errors.BoxliteError, match="does-not-exist"):
        await shared_box.copy_in(tmp_path / "does-not-exist", "/tmp")
    with pytest.raises(boxlite.InvalidOptionError, match="absolute"):
        await shared_box.copy_out("relative/path", tmp_path)


def _snapshot(root: Path, *skip: Path) -> dict[str, tuple[object, ...]]:
    """Every path below ``root`` (not followed), but those in ``skip`` and below: type, mode,
    inode, links, times and content (a new name shows in its parent's times)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) in skip:
            dirnames.clear()
            continue
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path in skip:
                continue
            st = os.lstat(path)
            if path.is_symlink():
                content: object = os.readlink(path)
            elif path.is_file():
                content = path.read_bytes()
            else:
                content = None
            out[str(path)] = (st.st_mode, st.st_ino, st.st_nlink, st.st_mtime_ns, content)
    return out


def _host_victims(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "victim").write_text("original")
    (outside / "sub" / ".bashrc").write_text("original rc")
    return outside


@pytest.mark.hostile
async def test_copy_out_of_a_hostile_tree_writes_only_inside_the_destination(
    shared_box: boxlite.Box, tmp_path: Path
) -> None:
    # Root in the box makes symlinks to the host's absolute paths and to the parents, hard
    # links, a setuid file, a fifo and a device node.
    outside = _host_victims(tmp_path)
    script = f"""
        set -e
        rm -rf /hostile && mkdir -p /hostile/sub
        ln -s {outside} /hostile/abs
        ln -s {outside}/victim /hostile/victim
        ln -s / /hostile/root
        ln -s ../../../../../.. /hostile/up
        echo data > /hostile/sub/f
        chmod 4755 /hostile/sub/f
        ln /hostile/sub/f /hostile/hard
        ln /etc/passwd /hostile/passwd
        mkfifo /hostile/fifo
        mknod /hostile/null c 1 3
    """
    made = await shared_box.run("sh", ["-c", script])
    assert made.exit_code == 0, made.stderr
    dest = tmp_path / "dest"
    dest.mkdir()
    # The destination already holds a symlink where the item goes.
    (dest / "hostile").symlink_to(outside / "sub")
    before = _snapshot(tmp_path, dest)

    for _ in range(2):  # the second copy lands on the first one's symlinks
        await shared_box.copy_out("/hostile", dest)
        assert _snapshot(tmp_path, dest) == before
        item = dest / "hostile"
        assert item.is_dir() and not item.is_symlink()
        assert os.readlink(item / "abs") == str(outside)
        assert os.readlink(item / "victim") == f"{outside}/victim"
        assert (item / "sub" / "f").read_text() == "data\n"
        assert os.stat(item / "sub" / "f").st_mode & 0o7777 == 0o755
        assert (item / "hard").read_text() == "data\n"
        assert not os.path.lexists(item / "fifo") and not os.path.lexists(item / "null")
    assert (outside / "victim").read_text() == "original"
    assert (outside / "sub" / ".bashrc").read_text() == "original rc"


def _tar_header(name: bytes, kind: bytes, data: bytes = b"", link: bytes = b"", mode: int = 0o644) -> bytes:
    """One ustar header (and its padded content), written byte by byte as a hostile writer
    would: ``name`` may hold anything, including bytes after a NUL."""
    h = bytearray(512)
    h[0 : len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % len(data)
    h[136:148] = b"%011o\0" % 1_600_000_000
    h[148:156] = b" " * 8
    h[156:157] = kind
    h[157 : 157 + len(link)] = link
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h) + data + b"\0" * (-len(data) % 512)


# Runs in the box: a process whose /proc/<pid>/cmdline is exactly the archive's bytes (its
# arguments are the archive split at NUL bytes). The archive's first header hides
# "-c <code>" after the NUL that ends its name, so the process is python3 sleeping.
_SMUGGLER = """
import os, sys
parts = open(sys.argv[1], "rb").read().split(b"\\0")[:-1]
with open(sys.argv[2], "w") as f:
    f.write(str(os.getpid()))
os.execv("/usr/bin/python3", parts)
"""


async def _smuggle(
    box: boxlite.SimpleBox, tmp_path: Path, name: str, entries: list[bytes]
) -> tuple[str, boxlite.Execution]:
    """Makes ``/proc/<pid>/cmdline`` in the box hold the tar stream ``entries``; the box's
    packer sends it after the header of the (empty-looking) cmdline file, so the host reads
    it as the archive's next entries: the bytes root in the box could send with its own agent."""
    first = _tar_header(b"x\0-c\0import time; time.sleep(600)", b"5", mode=0o755)
    archive = first + b"".join(entries) + b"\0" * 1024
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    (scratch / f"{name}.tar").write_bytes(archive)
    await box.copy_in(scratch / f"{name}.tar", f"/tmp/{name}.tar")
    execution = await box.box.exec("python3", ["-c", _SMUGGLER, f"/tmp/{name}.tar", f"/tmp/{name}.pid"])
    for _ in range(300):
        pid = (await box.exec("cat", f"/tmp/{name}.pid")).stdout.strip()
        if pid:
            size = await box.exec("sh", "-c", f"wc -c < /proc/{pid}/cmdline")
            if size.stdout.strip() == str(len(archive)):
                return f"/proc/{pid}/cmdline", execution
    raise AssertionError("the smuggling process did not start")


@pytest.mark.hostile
async def test_copy_out_of_a_hostile_tar_stream_writes_only_inside_the_destination(
    python_box: boxlite.SimpleBox, tmp_path: Path
) -> None:
    outside = _host_victims(tmp_path)
    victim = str(outside / "victim").encode()
    attacks = {
        # A symlink to a host directory, then a file through it.
        "symlink": [
            _tar_header(b"x/link", b"2", link=str(outside / "sub").encode()),
            _tar_header(b"x/link/.bashrc", b"0", b"pwned"),
        ],
        # A hard link to a host file, then a file of that name (which would write the host's).
        "hardlink": [_tar_header(b"x/v", b"1", link=victim), _tar_header(b"x/v", b"0", b"pwned")],
        # Names that climb out, or are absolute.
        "dotdot": [_tar_header(b"x/../../outside/victim", b"0", b"pwned")],
        "absolute": [_tar_header(victim, b"0", b"pwned")],
    }
    for name, entries in attacks.items():
        dest = tmp_path / f"dest-{name}"
        dest.mkdir()
        (tmp_path / "scratch").mkdir(exist_ok=True)
        before = _snapshot(tmp_path, dest, tmp_path / "scratch")
        path, execution = await _smuggle(python_box, tmp_path, name, entries)
        try:
            with pytest.raises(CopyError, match="refused") as refused:
                await python_box.copy_out(path, dest)
        finally:
            await execution.kill()
            await execution.wait()
        assert _snapshot(tmp_path, dest, tmp_path / "scratch") == before, name
        assert (outside / "victim").read_text() == "original"
        assert (outside / "sub" / ".bashrc").read_text() == "original rc"
        # The stream did reach the host's unpacker: the smuggled directory replaced the file.
        assert (dest / "cmdline").is_dir(), refused.value
    assert os.readlink(tmp_path / "dest-symlink" / "cmdline" / "link") == str(outside / "sub")


@pytest.mark.hostile
async def test_copy_out_over_the_size_limit_fails_clearly(
    runtime: boxlite.Boxlite, busybox: str, tmp_path: Path
) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, copy_out_max_bytes=1 << 20))
    try:
        await box.run(
            "sh", ["-c", "mkdir /big && head -c 600000 /dev/zero > /big/a && head -c 600000 /dev/zero > /big/b"]
        )
        with pytest.raises(CopyError, match="copy_out_max_bytes"):
            await box.copy_out("/big", tmp_path)
        # The first file (in the box's directory order) came out whole; the second, which
        # crossed the limit, is not there at all, nor any partial file.
        files = list((tmp_path / "big").iterdir())
        assert [(p.name in ("a", "b"), p.stat().st_size) for p in files] == [(True, 600000)]
    finally:
        await box.stop()
