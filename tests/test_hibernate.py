"""Hibernation on real VMs: ``box.stop(keep_state=True)`` saves a kept box's whole state into
its own directory and ends its VM; the next ``start()``, here in another process, resumes it
with its files, ``/tmp`` and a running process where they were. The refusals: a box removed
when it stops, a box with volumes (both before anything stops), a tampered saved state (at
start, with ``start(discard_state=True)`` as the way out). And the snapshot commands of the
``boxlite`` program, through the real program: ``snapshot``, ``snapshots [--json]``,
``snapshots rm``, ``run --from-snapshot``, ``stop --keep-state`` and ``start`` resuming."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import boxlite
import pytest
from boxlite.sync_api import SyncBox
from conftest import pid_alive, shell_output, start_counter

# Run in another process: resumes the hibernated box, reads what survived, hibernates it again.
RESUME_ELSEWHERE = r"""
import asyncio, json, sys, time
import boxlite

async def out(box, script):
    result = await box.run("sh", ["-c", script])
    assert result.exit_code == 0, result
    return result.stdout.strip()

async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    box = await runtime.get("sleeper")
    before = box.info()
    await box.start()
    first = int(await out(box, "cat /tmp/count"))
    await asyncio.sleep(1)
    report = {
        "before": [before.status, before.hibernated],
        "after": [box.info().status, box.info().hibernated],
        "note": await out(box, "cat /tmp/note"),
        "alive": await out(box, f"kill -0 {sys.argv[2]} && echo alive"),
        "first": first,
        "second": int(await out(box, "cat /tmp/count")),
        "uptime": float(await out(box, "cut -d' ' -f1 /proc/uptime")),
        "clock_skew": float(await out(box, "date +%s")) - time.time(),
        "boot_id": await out(box, "cat /proc/sys/kernel/random/boot_id"),
    }
    await box.stop(keep_state=True)
    report["hibernated_again"] = box.info().hibernated
    print(json.dumps(report), flush=True)

asyncio.run(main())
"""


async def test_a_hibernated_box_resumes_in_another_process_and_a_tampered_state_is_refused(
    busybox: str, tmp_path: Path
) -> None:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, auto_remove=False, name="sleeper")
    )
    try:
        await shell_output(box, "echo in-memory > /tmp/note")
        _, pid = await start_counter(box)
        uptime = float(await shell_output(box, "cut -d' ' -f1 /proc/uptime"))
        boot_id = await shell_output(box, "cat /proc/sys/kernel/random/boot_id")
        vmm = box.info().vmm_pid
        assert vmm is not None

        await box.stop(keep_state=True)
        info = box.info()
        assert (info.status, info.hibernated, info.vmm_pid) == ("stopped", True, None)
        assert not pid_alive(vmm), "the VMM of a hibernated box ended"
        state = Path(info.dir) / "hibernated" / "state"
        assert state.is_file()
        assert [s.name for s in runtime.snapshots.list()] == [], "a hibernated state is no snapshot"
        # Another process sees it hibernated too.
        assert (await boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path))).get_info("sleeper")).hibernated
        await asyncio.sleep(3)  # a guest clock left where it was saved would be seconds behind

        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RESUME_ELSEWHERE,
            str(tmp_path),
            pid,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=240)
        assert proc.returncode == 0, stderr.decode()
        report = json.loads(stdout.decode().strip().splitlines()[-1])
        assert report["before"] == ["stopped", True]
        # Resumed, not booted: its saved state is gone (the disk has moved on from it).
        assert report["after"] == ["running", False]
        assert report["note"] == "in-memory"
        assert report["alive"] == "alive"
        assert report["second"] > report["first"], "the counter goes on counting"
        assert report["uptime"] >= uptime, "the guest's uptime goes on: it was not booted"
        assert report["boot_id"] == boot_id, "the same box, the same boot"
        assert abs(report["clock_skew"]) < 2, "the resumed guest's clock is the host's"
        assert report["hibernated_again"] is True

        # A saved state modified on disk is never run: start fails with the way out.
        with state.open("r+b") as f:
            f.seek(max(0, state.stat().st_size - 8192))
            data = f.read(4096)
            f.seek(max(0, state.stat().st_size - 8192))
            f.write(bytes(b ^ 0xFF for b in data))
        with pytest.raises(boxlite.SnapshotError, match=r"is damaged.*not run.*discard_state=True"):
            await box.start()
        assert box.info().status == "stopped" and box.info().vmm_pid is None
        assert box.info().hibernated
        # So is one saved with another QEMU (or kernel, or agent) than this runtime's.
        record = state.parent / "snapshot.json"
        saved = json.loads(record.read_text())
        saved["versions"]["qemu"] = "1.0.0"
        record.write_text(json.dumps(saved))
        with pytest.raises(boxlite.SnapshotError, match=r"taken with QEMU 1\.0\.0, and this runtime.*discard_state"):
            await box.start()
        assert box.info().status == "stopped" and box.info().vmm_pid is None
        # The way out: boot from the disk, the saved state deleted (what ran in memory is lost).
        await box.start(discard_state=True)
        assert box.info().status == "running" and not box.info().hibernated
        assert not state.parent.exists()
        assert float(await shell_output(box, "cut -d' ' -f1 /proc/uptime")) < report["uptime"], "booted afresh"
    finally:
        await runtime.remove("sleeper", force=True)
    assert not (tmp_path / "boxes" / box.id).exists(), "removing the box removes its saved state"


async def test_keep_state_is_refused_before_anything_stops(
    runtime: boxlite.Boxlite, shared_box: boxlite.Box, busybox: str, tmp_path: Path
) -> None:
    # A box removed when it stops would lose its saved state with its files.
    with pytest.raises(boxlite.InvalidOptionError, match=r"auto_remove=False"):
        await shared_box.stop(keep_state=True)
    assert shared_box.info().status == "running"

    volumes = [(str(tmp_path), "/shared")]
    box = await runtime.create(
        boxlite.BoxOptions(
            rootfs_path=busybox, memory_mib=256, network_enabled=False, volumes=volumes, auto_remove=False
        )
    )
    try:
        with pytest.raises(boxlite.SnapshotError, match=r"volumes.*nothing was stopped"):
            await box.stop(keep_state=True)
        with pytest.raises(boxlite.SnapshotError, match=r"volumes.*nothing was stopped"):
            SyncBox(box).stop(keep_state=True)  # the sync twin takes the same flag
        assert box.info().status == "running" and not box.info().hibernated
        assert await shell_output(box, "echo still-running") == "still-running"
    finally:
        await runtime.remove(box.id, force=True)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BOXLITE_HOME=str(home), BOXLITE_LOG="error")
    return subprocess.run(
        [sys.executable, "-m", "boxlite", *args], env=env, capture_output=True, text=True, timeout=300
    )


def ok(home: Path, *args: str) -> str:
    done = cli(home, *args)
    assert done.returncode == 0, f"boxlite {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def test_snapshot_commands_and_hibernation_through_the_program(busybox: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert ok(home, "run", "-d", "--name", "src", "-m", "256", "--network", "none", busybox).strip() == "src"
    try:
        ok(home, "exec", "src", "--", "sh", "-c", "echo in-memory > /tmp/note")
        snap_id, snap_name = ok(home, "snapshot", "src", "base").split()
        assert snap_name == "base"

        table = ok(home, "snapshots").splitlines()
        assert table[0].split() == ["NAME", "ID", "SOURCE", "BOX", "IMAGE", "SIZE", "CREATED"]
        assert table[1].split()[:2] == ["base", snap_id]
        [listed] = json.loads(ok(home, "snapshots", "--json"))
        assert (listed["id"], listed["name"], listed["source_box"]) == (snap_id, "base", listed["source_box"])

        # A throwaway box restored from it has the source's /tmp; the image is the snapshot's.
        restored = cli(home, "run", "--rm", "--from-snapshot", "base", "--", "cat", "/tmp/note")
        assert (restored.returncode, restored.stdout) == (0, "in-memory\n"), restored.stderr

        # Hibernate the source and resume it with `start`: /tmp and its uptime go on.
        uptime = float(ok(home, "exec", "src", "--", "cut", "-d ", "-f1", "/proc/uptime"))
        assert ok(home, "stop", "--keep-state", "src").strip() == "src"
        assert "stopped (hibernated)" in ok(home, "ls")
        assert ok(home, "start", "src").strip() == "src"
        assert ok(home, "exec", "src", "--", "cat", "/tmp/note") == "in-memory\n"
        assert float(ok(home, "exec", "src", "--", "cut", "-d ", "-f1", "/proc/uptime")) >= uptime
        assert "hibernated" not in ok(home, "ls")

        assert ok(home, "snapshots", "rm", "base").strip() == "base"
        assert ok(home, "snapshots").splitlines()[1:] == []
        missing = cli(home, "snapshots", "rm", "base")
        assert missing.returncode == 1 and "runtime.snapshots.list()" in missing.stderr
    finally:
        cli(home, "rm", "-f", "src")
