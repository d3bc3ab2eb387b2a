"""Volumes: host directories shared into the box over 9p; read-only ones refuse writes in the
guest (and in QEMU), read-write ones write through to the host. Also: the guest's clock comes
from the host even when the extra devices cost it its RTC."""

from __future__ import annotations

import time
from pathlib import Path

import boxlite
import pytest


@pytest.fixture(scope="module")
async def volume_box(runtime: boxlite.Boxlite, busybox: str, tmp_path_factory: pytest.TempPathFactory) -> boxlite.Box:
    data = tmp_path_factory.mktemp("vol-ro")
    (data / "input.txt").write_text("from the host\n")
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


async def test_read_only_volume_is_readable_and_refuses_writes(volume_box: boxlite.Box) -> None:
    data, _ = volume_box.test_dirs  # type: ignore[attr-defined]
    assert (await volume_box.run("cat", ["/data/input.txt"])).stdout == "from the host\n"
    write = await volume_box.run("sh", ["-c", "echo x > /data/new.txt"])
    assert write.exit_code != 0 and "Read-only file system" in write.stderr
    remount = await volume_box.run("mount", ["-o", "remount,rw", "/data"])
    if remount.exit_code == 0:  # root in the box may remount; QEMU still refuses the write
        again = await volume_box.run("sh", ["-c", "echo x > /data/new.txt"])
        assert again.exit_code != 0
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


async def test_bad_volumes_are_refused(runtime: boxlite.Boxlite, busybox: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(boxlite.InvalidOptionError, match="not a directory"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, volumes=[(str(tmp_path / "file"), "/f")]))
    with pytest.raises(boxlite.InvalidOptionError, match="absolute"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, volumes=[(str(tmp_path), "rel")]))
    with pytest.raises(boxlite.InvalidOptionError, match="mode"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, volumes=[(str(tmp_path), "/x", "rx")]))
