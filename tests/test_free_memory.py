"""Memory a guest frees goes back to the host: a booted box's balloon device reports the guest's
free pages (free page reporting), and QEMU drops them from the VM's resident memory, so a box
that once used 200 MiB does not hold them for the rest of its life. A box restored from a
snapshot maps its RAM from the snapshot's memory file, whose pages QEMU cannot discard: its
guest has reporting turned off, so QEMU never logs a refused discard.

The tests use memory sizes no other test uses, so that their boot cache keys are theirs alone
in the session's home."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import boxlite
import pytest
from conftest import shell_output

MIB = 2**20
FILL_MIB = 200
# A tmpfs file's pages are guest memory: written, they are resident in the VMM; deleted, free.
FILL = f"head -c {FILL_MIB * MIB} /dev/zero > /dev/shm/fill"
BALLOON_BOUND = "ls /sys/bus/virtio/drivers/virtio_balloon | grep -c '^virtio' || true"


async def vmm_rss(box: boxlite.Box) -> int:
    return (await box.metrics()).vmm_rss


async def rss_falls_below(box: boxlite.Box, limit: int, seconds: float) -> int:
    """The VMM's RSS once it is below ``limit``, or its last value after ``seconds``."""
    deadline = time.monotonic() + seconds
    rss = await vmm_rss(box)
    while rss >= limit and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        rss = await vmm_rss(box)
    return rss


async def test_memory_a_booted_box_frees_goes_back_to_the_host(
    runtime: boxlite.Boxlite, busybox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXLITE_BOOT_CACHE", "0")
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=456))
    try:
        assert await shell_output(box, BALLOON_BOUND) == "1"
        before = await vmm_rss(box)
        await shell_output(box, FILL)
        filled = await vmm_rss(box)
        assert filled > before + (FILL_MIB - 50) * MIB, (before, filled)
        await shell_output(box, "rm /dev/shm/fill")
        # The guest reports free blocks 2 s after a free; QEMU drops them at once.
        after = await rss_falls_below(box, before + 64 * MIB, 30)
        assert after < before + 64 * MIB, f"RSS {before / MIB:.0f} -> {filled / MIB:.0f} -> {after / MIB:.0f} MiB"
        assert await shell_output(box, "echo still here") == "still here"
    finally:
        await box.stop()


async def test_a_restored_box_reports_nothing_qemu_cannot_discard(
    runtime: boxlite.Boxlite, busybox: str, home: Path
) -> None:
    shape = boxlite.BoxOptions(rootfs_path=busybox, memory_mib=472)
    # The second box of a shape is snapshotted once booted; the third is restored from it.
    for _ in range(2):
        await (await runtime.create(shape)).stop()
    kept = boxlite.BoxOptions(rootfs_path=busybox, memory_mib=472, auto_remove=False)
    box = await runtime.create(kept)
    try:
        pid = box.info().vmm_pid
        assert pid is not None and "-incoming" in Path(f"/proc/{pid}/cmdline").read_text()
        assert await shell_output(box, BALLOON_BOUND) == "0", "the restored guest still reports"
        await shell_output(box, f"{FILL}; rm /dev/shm/fill; sleep 4")
        log = (home / "boxes" / box.id / "vmm.log").read_text()
        assert "ram_block_discard_range" not in log, log[-500:]
        # Hibernated and resumed, its RAM is the VMM's own again: it reports once more.
        await box.stop(keep_state=True)
        await box.start()
        assert await shell_output(box, BALLOON_BOUND) == "1", "the resumed guest does not report"
    finally:
        await runtime.remove(box.id, force=True)


async def test_a_snapshotted_box_reports_again_and_its_restores_do_not(
    runtime: boxlite.Boxlite, busybox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The snapshot is saved with reporting off (its restores map its memory file); the box
    # it was taken of turns it on again once it runs on.
    monkeypatch.setenv("BOXLITE_BOOT_CACHE", "0")
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=488))
    snapshot = None
    try:
        assert await shell_output(box, BALLOON_BOUND) == "1"
        snapshot = await box.snapshot()
        deadline = time.monotonic() + 30
        while await shell_output(box, BALLOON_BOUND) != "1":
            assert time.monotonic() < deadline, "the snapshotted box no longer reports"
            await asyncio.sleep(0.2)
        restored = await runtime.restore(snapshot.name)
        try:
            assert await shell_output(restored, BALLOON_BOUND) == "0", "the restored guest reports"
        finally:
            await restored.stop()
    finally:
        await box.stop()
        if snapshot is not None:
            runtime.snapshots.remove(snapshot.name)
