"""read_file / write_file / list_dir / stat: the agent's file builtins (no shell, no program of
the image, no content in argv), each failure the matching OSError subclass, every answer bounded."""

from __future__ import annotations

import os
import time

import boxlite
import pytest
from boxlite.errors import BoxFileError, BoxFileTooLargeError, BoxliteError, InvalidOptionError


async def _box_sh(box: boxlite.Box, script: str) -> str:
    result = await box.run("sh", ["-c", script])
    assert result.exit_code == 0, result.stderr
    return result.stdout


async def test_write_then_read_round_trips_binary_and_sets_the_mode(shared_box: boxlite.Box) -> None:
    await _box_sh(shared_box, "rm -rf /fops && mkdir /fops")
    data = os.urandom(3 * 1024 * 1024 + 17)  # many stdin chunks
    await shared_box.write_file("/fops/blob.bin", data, mode=0o600)
    assert await shared_box.read_file("/fops/blob.bin") == data
    # Checked by the box's own tools: exactly the mode asked for (no umask), the right size.
    assert await _box_sh(shared_box, "stat -c '%a %s' /fops/blob.bin") == f"600 {len(data)}\n"
    # Text is UTF-8; an existing file is replaced and keeps its mode.
    await shared_box.write_file("/fops/blob.bin", "héllo\n", mode=0o755)
    assert await shared_box.read_text("/fops/blob.bin") == "héllo\n"
    assert await _box_sh(shared_box, "stat -c '%a' /fops/blob.bin") == "600\n"
    await shared_box.write_file("/fops/empty", b"")
    assert await shared_box.read_file("/fops/empty") == b""


async def test_write_options_parents_and_exclusive(shared_box: boxlite.Box) -> None:
    await _box_sh(shared_box, "rm -rf /fops2")
    with pytest.raises(FileNotFoundError, match="no such file or directory") as missing:
        await shared_box.write_file("/fops2/a/b.txt", "x")
    assert isinstance(missing.value, BoxliteError)
    await shared_box.write_file("/fops2/a/b.txt", "x", parents=True)
    assert await _box_sh(shared_box, "cat /fops2/a/b.txt") == "x"
    with pytest.raises(FileExistsError):
        await shared_box.write_file("/fops2/a/b.txt", "y", exclusive=True)
    assert await shared_box.read_text("/fops2/a/b.txt") == "x"  # untouched
    with pytest.raises(IsADirectoryError):
        await shared_box.write_file("/fops2/a", "y")
    with pytest.raises(NotADirectoryError):
        await shared_box.write_file("/fops2/a/b.txt/c", "y")
    with pytest.raises(InvalidOptionError, match="mode"):
        await shared_box.write_file("/fops2/z", "y", mode=0o17777)


async def test_read_errors_name_the_reason(shared_box: boxlite.Box) -> None:
    with pytest.raises(FileNotFoundError, match="/nope/file: no such file or directory"):
        await shared_box.read_file("/nope/file")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        await shared_box.read_file("/etc")
    # A FIFO would never end: refused at once rather than read.
    await _box_sh(shared_box, "rm -f /tmp/fifo && mkfifo /tmp/fifo")
    started = time.monotonic()
    with pytest.raises(BoxFileError, match="not a regular file"):
        await shared_box.read_file("/tmp/fifo")
    assert time.monotonic() - started < 30
    with pytest.raises(InvalidOptionError, match="path"):
        await shared_box.read_file("")


async def test_reads_are_bounded_by_max_bytes(shared_box: boxlite.Box) -> None:
    await _box_sh(shared_box, "head -c 5000 /dev/zero > /tmp/five-k")
    with pytest.raises(BoxFileTooLargeError, match="larger than the 4999 bytes"):
        await shared_box.read_file("/tmp/five-k", max_bytes=4999)
    assert len(await shared_box.read_file("/tmp/five-k", max_bytes=5000)) == 5000
    # A /proc file says its size is 0: the cap still applies while it is read.
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(BoxFileTooLargeError):
        await shared_box.read_file("/proc/self/status", max_bytes=64)
    assert b"Name:" in await shared_box.read_file("/proc/self/status")


async def test_ranges_read_like_head_and_tail(shared_box: boxlite.Box) -> None:
    await shared_box.write_file("/tmp/digits", b"0123456789")
    assert await shared_box.read_file("/tmp/digits", length=4) == b"0123"
    assert await shared_box.read_file("/tmp/digits", offset=7) == b"789"
    assert await shared_box.read_file("/tmp/digits", offset=3, length=2) == b"34"
    assert await shared_box.read_file("/tmp/digits", offset=50) == b""
    # A length is cut to max_bytes instead of failing: a head of a large file is cheap.
    assert await shared_box.read_file("/tmp/digits", length=100, max_bytes=5) == b"01234"
    with pytest.raises(InvalidOptionError, match="offset"):
        await shared_box.read_file("/tmp/digits", offset=-1)


async def test_list_dir_describes_every_entry(shared_box: boxlite.Box) -> None:
    await _box_sh(
        shared_box,
        "rm -rf /ls && mkdir -p /ls/sub && printf abc > /ls/file && ln -s file /ls/link"
        " && ln -s /missing /ls/dangling && printf x > '/ls/we ird\nname' && mkfifo /ls/pipe"
        " && chmod 4755 /ls/file",
    )
    entries = await shared_box.list_dir("/ls")
    assert [(e.name, e.kind) for e in entries] == [
        ("dangling", "symlink"),
        ("file", "file"),
        ("link", "symlink"),
        ("pipe", "other"),
        ("sub", "directory"),
        ("we ird\nname", "file"),
    ]
    by_name = {e.name: e for e in entries}
    assert by_name["file"].size == 3
    assert by_name["file"].mode == 0o4755  # the setuid bit is reported, not hidden
    assert by_name["file"].filemode == "-rwsr-xr-x"
    assert by_name["link"].link_target == "file"
    assert by_name["dangling"].link_target == "/missing"
    assert by_name["file"].uid == 0 and by_name["file"].link_target is None
    with pytest.raises(NotADirectoryError):
        await shared_box.list_dir("/ls/file")
    with pytest.raises(FileNotFoundError):
        await shared_box.list_dir("/ls/none")
    assert await shared_box.list_dir("/ls/sub") == []


async def test_stat_follows_symlinks_unless_told(shared_box: boxlite.Box) -> None:
    await _box_sh(
        shared_box, "rm -rf /st && mkdir /st && printf 12345 > /st/f && ln -s f /st/l && touch -t 200109090146.40 /st/f"
    )
    followed = await shared_box.stat("/st/l")
    assert (followed.name, followed.kind, followed.size) == ("l", "file", 5)
    assert followed.mtime == 1_000_000_000
    link = await shared_box.stat("/st/l", follow_symlinks=False)
    assert (link.kind, link.link_target) == ("symlink", "f")
    root = await shared_box.stat("/")
    assert (root.name, root.is_dir) == ("/", True)
    assert await shared_box.exists("/st/f")
    assert not await shared_box.exists("/st/none")
    with pytest.raises(FileNotFoundError):
        await shared_box.stat("/st/none")


async def test_relative_paths_start_at_the_working_directory(shared_box: boxlite.Box) -> None:
    await _box_sh(shared_box, "rm -f /relative.txt")
    await shared_box.write_file("relative.txt", "here")  # busybox's working directory is /
    assert await _box_sh(shared_box, "cat /relative.txt") == "here"
    assert any(e.name == "relative.txt" for e in await shared_box.list_dir("."))


async def test_file_ops_need_no_program_in_the_image(runtime: boxlite.Boxlite, busybox: str) -> None:
    """With every program of the image gone, the builtins still work: they run the agent's
    own code, not ``cat`` or ``sh``."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    try:
        await _box_sh(box, "rm -rf /bin /sbin /usr/bin /usr/sbin")
        assert (await box.run("sh", ["-c", "true"])).exit_code == 127
        await box.write_file("/data.txt", "still works")
        assert await box.read_text("/data.txt") == "still works"
        assert (await box.stat("/data.txt")).size == len("still works")
        assert "data.txt" in [e.name for e in await box.list_dir("/")]
    finally:
        await box.stop()
