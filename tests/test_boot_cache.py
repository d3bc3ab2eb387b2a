"""The boot cache on real VMs: a box created cold on an image and VM shape booted before is
restored from a snapshot taken right after an earlier such box booted, instead of booting; it
is as fresh as a booted box (no trace of the boxes before it, its own hostname, its own
randomness, the host's clock). Another shape, ``BOXLITE_BOOT_CACHE=0`` and an entry of other
versions boot cold; an entry no create used for a week goes once no box restored from it
remains.

The tests use memory sizes no other test uses, so that their keys are theirs alone in the
session's home."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import boxlite
import pytest
from conftest import boot_cache_entries, shell_output, vmm_command_line

SHAPE_MIB = 208
UNUSED_SHAPE_MIB = 224


async def test_a_shape_booted_before_is_restored_and_as_fresh_as_a_booted_box(
    runtime: boxlite.Boxlite, busybox: str, home: Path
) -> None:
    shape = boxlite.BoxOptions(rootfs_path=busybox, memory_mib=SHAPE_MIB)
    first = await runtime.create(shape)
    second = await runtime.create(shape)
    restored: list[boxlite.Box] = []
    try:
        # The first two boot; the second is snapshotted once booted, before it is returned.
        for booted in (first, second):
            assert "-incoming" not in vmm_command_line(booted)
            await shell_output(booted, "echo used > /root/trace; echo used > /tmp/trace")
        (entry,) = boot_cache_entries(home, SHAPE_MIB)
        assert entry["id"] not in {s.id for s in runtime.snapshots.list()}, "the cache is not listed"

        with_env = boxlite.BoxOptions(rootfs_path=busybox, memory_mib=SHAPE_MIB, env={"WHO": "third"})
        restored.append(await runtime.create(with_env))
        restored.append(await runtime.create(shape))
        third, fourth = restored
        for box in restored:
            command = vmm_command_line(box)
            assert "-incoming defer" in command, command
            assert f"mem-path={entry['dir']}/memory" in command, command
        # Nothing the earlier boxes did is there; the box is its own.
        assert await shell_output(third, "cat /root/trace /tmp/trace 2>/dev/null; true") == ""
        assert await shell_output(third, "hostname") == third.id[:12].lower()
        assert await shell_output(fourth, "hostname") == fourth.id[:12].lower()
        assert await shell_output(third, "echo $WHO") == "third"
        random_bytes = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"
        # Each restored box is a boot of its own, not its snapshot's (whose boot id the kernel fixed).
        boot_id = "cat /proc/sys/kernel/random/boot_id"
        boot_ids = {await shell_output(box, boot_id) for box in (second, third, fourth)}
        assert len(boot_ids) == 3, boot_ids
        # It stays the box's: read-only, as the kernel's own.
        forge = "echo 00000000-0000-4000-8000-000000000000 > /proc/sys/kernel/random/boot_id"
        forged = await third.run("sh", ["-c", forge])
        assert forged.exit_code != 0 and await shell_output(third, boot_id) in boot_ids
        assert await shell_output(third, random_bytes) != await shell_output(fourth, random_bytes)
        assert abs(int(await shell_output(third, "date +%s")) - time.time()) < 3
        await shell_output(third, "echo third > /root/mine")
        assert await shell_output(fourth, "cat /root/mine 2>/dev/null; true") == ""
    finally:
        for box in (first, second, *restored):
            await box.stop()


async def test_another_shape_and_the_switch_off_boot_cold(
    runtime: boxlite.Boxlite, busybox: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert boot_cache_entries(home, SHAPE_MIB), "the first test cached this shape"
    other = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=SHAPE_MIB + 8))
    try:
        assert "-incoming" not in vmm_command_line(other)
    finally:
        await other.stop()
    monkeypatch.setenv("BOXLITE_BOOT_CACHE", "0")
    switched_off = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=SHAPE_MIB))
    try:
        assert "-incoming" not in vmm_command_line(switched_off)
    finally:
        await switched_off.stop()


async def test_an_entry_of_other_versions_is_removed_and_the_box_boots(
    runtime: boxlite.Boxlite, busybox: str, home: Path
) -> None:
    (entry,) = boot_cache_entries(home, SHAPE_MIB)
    db = sqlite3.connect(home / "db" / "snapshots.db")
    with db:
        entry["versions"]["agent"] = "0000000000000000"  # type: ignore[index]
        db.execute("UPDATE snapshots SET info = ? WHERE id = ?", (json.dumps(entry), entry["id"]))
    db.close()
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=SHAPE_MIB))
    try:
        assert "-incoming" not in vmm_command_line(box)
        assert boot_cache_entries(home, SHAPE_MIB) == []
        assert not Path(str(entry["dir"])).exists()
    finally:
        await box.stop()


def age(path: Path, days: float) -> None:
    then = time.time() - days * 24 * 3600
    os.utime(path, (then, then))


async def test_an_entry_no_create_used_for_a_week_is_removed_once_no_box_uses_it(
    runtime: boxlite.Boxlite, busybox: str, home: Path
) -> None:
    shape = boxlite.BoxOptions(rootfs_path=busybox, memory_mib=UNUSED_SHAPE_MIB)
    other_shape = boxlite.BoxOptions(rootfs_path=busybox, memory_mib=UNUSED_SHAPE_MIB + 8)
    for _ in range(2):
        await (await runtime.create(shape)).stop()
    (entry,) = boot_cache_entries(home, UNUSED_SHAPE_MIB)
    entry_dir = Path(str(entry["dir"]))
    age(entry_dir, 8)
    restored = await runtime.create(shape)
    try:
        assert "-incoming defer" in vmm_command_line(restored)
        assert time.time() - entry_dir.stat().st_mtime < 600, "a restore marks the entry used"
        age(entry_dir, 8)
        # Unused for a week by creates, but a box restored from it remains: kept.
        await (await runtime.create(other_shape)).stop()
        assert boot_cache_entries(home, UNUSED_SHAPE_MIB) == [entry]
    finally:
        await restored.stop()
    await (await runtime.create(other_shape)).stop()
    assert boot_cache_entries(home, UNUSED_SHAPE_MIB) == []
    assert not entry_dir.exists()
