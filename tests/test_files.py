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
