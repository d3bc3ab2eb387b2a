"""Snapshots on real VMs: a box's memory, processes and disk saved (``box.snapshot()``) and
restored into new boxes (``runtime.restore()``), which go on from where it was and diverge
from it and from each other; the records (``runtime.snapshots``); and the refusals: a box with
volumes, a snapshot taken with another QEMU, kernel or agent, a damaged state file, an unknown
name, removing a snapshot a box still uses."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import boxlite
import pytest
from conftest import shell_output, sparse_file_digest, start_counter


@pytest.fixture(scope="module")
async def parent(runtime: boxlite.Boxlite, busybox: str) -> AsyncIterator[tuple[boxlite.Box, str]]:
    """A busybox box with a file in /tmp, one on its disk and a running counter; its pid."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    await shell_output(box, "echo in-memory > /tmp/note; echo on-disk > /root/disk-note; sync")
    counter, pid = await start_counter(box)
    yield box, pid
    await counter.kill()
    await box.stop()


@pytest.fixture(scope="module")
async def snapshot(parent: tuple[boxlite.Box, str]) -> boxlite.SnapshotInfo:
    box, _ = parent
    await asyncio.sleep(0.5)  # the counter has counted
    return await box.snapshot("base")


async def test_files_and_a_running_process_survive_and_parent_and_restore_diverge(
    runtime: boxlite.Boxlite, parent: tuple[boxlite.Box, str], snapshot: boxlite.SnapshotInfo
) -> None:
    box, pid = parent
    # The parent runs on after its snapshot.
    assert box.info().status == "running"
    assert await shell_output(box, "cat /tmp/note") == "in-memory"
    restored = await runtime.restore(snapshot.name)
    try:
        assert restored.id != box.id
        assert await shell_output(restored, "cat /tmp/note /root/disk-note") == "in-memory\non-disk"
        # The counter started in the parent runs in the restored box, same pid.
        assert await shell_output(restored, f"kill -0 {pid} && echo alive") == "alive"
        first = int(await shell_output(restored, "cat /tmp/count"))
        await asyncio.sleep(1)
        assert int(await shell_output(restored, "cat /tmp/count")) > first
        # Writes after the snapshot stay in their own box, in memory and on disk.
        await shell_output(box, "echo parent > /tmp/later; echo parent > /root/later")
        await shell_output(restored, "echo child > /tmp/child; echo child > /root/child")
        assert await shell_output(restored, "ls /tmp/later /root/later 2>/dev/null; true") == ""
        assert await shell_output(box, "ls /tmp/child /root/child 2>/dev/null; true") == ""
        assert await shell_output(box, "cat /tmp/later") == "parent"
        assert await shell_output(restored, "cat /root/child") == "child"
    finally:
        await restored.stop()


async def test_two_restores_diverge_in_randomness_and_the_clock_is_the_hosts(
    runtime: boxlite.Boxlite, snapshot: boxlite.SnapshotInfo
) -> None:
    # The snapshot is seconds old by now: a restored guest must take the host's time.
    await asyncio.sleep(2)
    one = await runtime.restore(snapshot.name)
    two = await runtime.restore(snapshot.name)
    try:
        random_bytes = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"
        a, b = await shell_output(one, random_bytes), await shell_output(two, random_bytes)
        assert len(a) == 32 and a != b, (a, b)
        guest = int(await shell_output(one, "date +%s"))
        assert abs(guest - time.time()) < 3, (guest, time.time())
        await shell_output(one, "echo one > /tmp/who")
        assert await shell_output(two, "cat /tmp/who 2>/dev/null; true") == ""
    finally:
        await one.stop()
        await two.stop()


def memory_mapping(pid: int, memory: Path) -> dict[str, int]:
    """The smaps fields (in KiB) of process ``pid``'s mapping of the file ``memory``."""
    fields: dict[str, int] = {}
    inside = False
    for row in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = row.split()
        if "-" in head[0] and ":" not in head[0]:
            inside = len(head) >= 6 and head[5] == str(memory)
        elif inside and row.endswith(" kB"):
            fields[head[0].rstrip(":")] = fields.get(head[0].rstrip(":"), 0) + int(head[1])
    assert fields, f"the VMM {pid} does not map {memory}"
    return fields


async def test_restored_boxes_share_the_snapshots_memory_and_never_write_it(
    runtime: boxlite.Boxlite, snapshot: boxlite.SnapshotInfo
) -> None:
    memory = snapshot.dir / "memory"
    assert snapshot.shares_memory and memory.is_file()
    before = sparse_file_digest(memory)
    one = await runtime.restore(snapshot.name)
    two = await runtime.restore(snapshot.name)
    try:
        # Each box writes 16 MiB of its own into its memory: pages copied on write, its own.
        digest = "dd if=/dev/urandom of=/tmp/big bs=1048576 count=16 2>/dev/null && md5sum < /tmp/big"
        assert await shell_output(one, digest) != await shell_output(two, digest)
        assert await shell_output(one, "cat /tmp/note") == "in-memory"
        for box in (one, two):
            pid = box.info().vmm_pid
            assert pid is not None
            mapped = memory_mapping(pid, memory)
            # The pages both VMMs read from the file are one copy in the host's page cache.
            assert mapped["Shared_Clean"] >= 4096, mapped
        assert sparse_file_digest(memory) == before
    finally:
        await one.stop()
        await two.stop()


async def test_list_get_and_remove_refused_while_a_box_uses_it(
    runtime: boxlite.Boxlite, parent: tuple[boxlite.Box, str], snapshot: boxlite.SnapshotInfo
) -> None:
    box, _ = parent
    listed = {s.name: s for s in runtime.snapshots.list()}
    assert listed["base"].id == snapshot.id
    got = runtime.snapshots.get(snapshot.id)
    assert (got.name, got.source_box, got.memory_mib) == ("base", box.id, 256)
    assert got.size_bytes > 0 and len(got.checksum) == 64
    assert got.versions.qemu and got.kernel_release
    assert (got.dir / "state").is_file() and (got.dir / "disk.qcow2").is_file()
    assert got.shares_memory and (got.dir / "memory").is_file()
    assert json.loads((got.dir / "snapshot.json").read_text())["checksum"] == got.checksum

    extra = await box.snapshot()
    assert extra.name == extra.id
    with pytest.raises(boxlite.BoxliteConflictError, match="already exists"):
        await box.snapshot("base")
    kept = await runtime.restore(extra.id, boxlite.BoxOptions(auto_remove=False, name="from-extra"))
    await kept.stop()
    with pytest.raises(boxlite.SnapshotError, match=r"in use by box.*from-extra"):
        runtime.snapshots.remove(extra.id)
    # A kept restored box starts again from its own disk (a boot, not a restore).
    await kept.start()
    assert await shell_output(kept, "cat /root/disk-note") == "on-disk"
    await kept.stop()
    await runtime.remove("from-extra")
    runtime.snapshots.remove(extra.id)
    assert not extra.dir.exists()
    assert extra.id not in {s.id for s in runtime.snapshots.list()}
    with pytest.raises(boxlite.SnapshotNotFoundError, match=r"runtime\.snapshots\.list\(\)"):
        runtime.snapshots.get(extra.id)


async def test_unknown_tampered_and_other_version_snapshots_are_refused_before_running(
    runtime: boxlite.Boxlite, parent: tuple[boxlite.Box, str], home: Path
) -> None:
    box, _ = parent
    with pytest.raises(boxlite.SnapshotNotFoundError, match=r"no-such-snapshot.*runtime\.snapshots\.list\(\)"):
        await runtime.restore("no-such-snapshot")
    boxes_before = {i.id for i in await runtime.list_info()}

    damaged = await box.snapshot("damaged")
    state = damaged.dir / "state"
    with state.open("r+b") as f:
        f.truncate(state.stat().st_size - 4096)
    with pytest.raises(boxlite.SnapshotError, match=r"is damaged.*not run"):
        await runtime.restore("damaged")
    runtime.snapshots.remove("damaged")

    # The memory file is checked as the state file is: one byte changed in a page the guest
    # had written is refused.
    damaged = await box.snapshot("damaged-memory")
    memory = damaged.dir / "memory"
    with memory.open("r+b") as f:
        written_page = os.lseek(f.fileno(), 0, os.SEEK_DATA)
        f.seek(written_page)
        byte = f.read(1)
        f.seek(written_page)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(boxlite.SnapshotError, match=r"is damaged: its memory file.*not run"):
        await runtime.restore("damaged-memory")
    runtime.snapshots.remove("damaged-memory")

    other = await box.snapshot("other-qemu")
    db = sqlite3.connect(home / "db" / "snapshots.db")
    with db:
        (text,) = db.execute("SELECT info FROM snapshots WHERE id = ?", (other.id,)).fetchone()
        info = json.loads(text)
        info["versions"]["qemu"] = "1.0.0"
        db.execute("UPDATE snapshots SET info = ? WHERE id = ?", (json.dumps(info), other.id))
    db.close()
    with pytest.raises(boxlite.SnapshotError, match=r"taken with QEMU 1\.0\.0, and this runtime has"):
        await runtime.restore("other-qemu")
    runtime.snapshots.remove("other-qemu")
    # Nothing was started or left behind by the refusals.
    assert {i.id for i in await runtime.list_info()} == boxes_before


async def test_a_box_with_a_volume_cannot_be_snapshotted(
    runtime: boxlite.Boxlite, busybox: str, tmp_path: Path, snapshot: boxlite.SnapshotInfo
) -> None:
    volumes = [(str(tmp_path), "/shared")]
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, network_enabled=False, volumes=volumes)
    )
    try:
        with pytest.raises(boxlite.SnapshotError, match="volumes"):
            await box.snapshot("with-volume")
        # The box runs on, and nothing was recorded.
        assert await shell_output(box, "echo ok") == "ok"
        assert "with-volume" not in {s.name for s in runtime.snapshots.list()}
    finally:
        await box.stop()
    with pytest.raises(boxlite.SnapshotError, match="cannot have volumes"):
        await runtime.restore(snapshot.name, boxlite.BoxOptions(volumes=[(str(tmp_path), "/shared")]))
