"""Box state that outlives a process (``db/boxes.db``, ``boxes/<id>/``): kept boxes survive the
Python process and are found, started and reattached from another one; boxes whose owning
process was killed are cleaned up (ephemeral) or reattached (kept) by the next runtime."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import boxlite
import pytest
from conftest import pid_alive, sparse_file_digest

CREATE_KEPT_AND_EXIT = """
import asyncio, json, sys, boxlite
async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=sys.argv[2], memory_mib=256,
                                                  auto_remove=False, name="workspace"))
    result = await (await box.exec("sh", ["-c", "echo kept-across-processes > /root/note.txt"])).wait()
    assert result.exit_code == 0, result.stderr
    print(json.dumps({"id": box.id, "vmm_pid": box.info().vmm_pid}), flush=True)
asyncio.run(main())
# The interpreter exits with the box running: the runtime stops it at exit and keeps its files.
"""

CREATE_TWO_AND_HANG = """
import asyncio, json, sys, boxlite
async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    kept = await runtime.create(boxlite.BoxOptions(rootfs_path=sys.argv[2], memory_mib=256,
                                                   auto_remove=False, name="kept"))
    await (await kept.exec("sh", ["-c", "echo still-here > /root/note.txt"])).wait()
    # Turn the guest's clock back to 2001: the next connection must set it again.
    clock = await (await kept.exec("sh", ["-c", "date -s @1000000000 >/dev/null && date +%s"])).wait()
    assert clock.stdout.strip().isdigit() and int(clock.stdout) < 1000000100, clock
    ephemeral = await runtime.create(boxlite.BoxOptions(rootfs_path=sys.argv[2], memory_mib=256))
    print(json.dumps({
        "kept": kept.id, "kept_vmm": kept.info().vmm_pid,
        "ephemeral": ephemeral.id, "ephemeral_vmm": ephemeral.info().vmm_pid,
        "ephemeral_dir": ephemeral.info().dir,
    }), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_a_kept_box_survives_its_process_and_is_started_again_from_another(busybox: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CREATE_KEPT_AND_EXIT,
        str(tmp_path),
        busybox,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    created = json.loads(out.decode().strip().splitlines()[-1])
    assert not pid_alive(created["vmm_pid"]), "the box was stopped at interpreter exit"

    rows = sqlite3.connect(tmp_path / "db/boxes.db").execute("SELECT id, name FROM boxes").fetchall()
    assert rows == [(created["id"], "workspace")]
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
    [info] = await runtime.list_info()
    assert (info.id, info.name, info.status, info.auto_remove) == (created["id"], "workspace", "stopped", False)
    assert (await runtime.get_info("workspace")).id == created["id"]

    box = await runtime.get("workspace")
    await box.start()
    try:
        result = await (await box.exec("cat", ["/root/note.txt"])).wait()
        assert result.stdout == "kept-across-processes\n"
        assert (await runtime.get_info(created["id"])).status == "running"
    finally:
        await runtime.remove("workspace", force=True)
    assert not (tmp_path / "boxes" / created["id"]).exists()
    assert sqlite3.connect(tmp_path / "db/boxes.db").execute("SELECT count(*) FROM boxes").fetchone() == (0,)
    with pytest.raises(boxlite.BoxNotFoundError):
        await runtime.get("workspace")


async def test_after_kill_9_of_the_owner_ephemeral_boxes_are_cleaned_and_kept_ones_reattached(
    busybox: str, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CREATE_TWO_AND_HANG,
        str(tmp_path),
        busybox,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=240)
        assert line, (await proc.stderr.read()).decode() if proc.stderr else ""
        made = json.loads(line)

        # While the owner lives, another process sees its boxes but does not take them.
        observer = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
        statuses = {i.id: i.status for i in await observer.list_info()}
        assert statuses == {made["kept"]: "running", made["ephemeral"]: "running"}
        with pytest.raises(boxlite.InvalidOptionError, match=rf"running in process {proc.pid}"):
            await observer.get("kept")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()

    # The VMs outlive their owner (their own process groups) until a runtime opens the home.
    assert pid_alive(made["kept_vmm"]) and pid_alive(made["ephemeral_vmm"])
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
    assert not pid_alive(made["ephemeral_vmm"])
    assert not Path(made["ephemeral_dir"]).exists()
    [info] = await runtime.list_info()
    assert (info.id, info.status, info.vmm_pid) == (made["kept"], "running", made["kept_vmm"])

    box = await runtime.get("kept")
    result = await (await box.exec("cat", ["/root/note.txt"])).wait()
    assert result.stdout == "still-here\n"
    # Reattaching set the guest's clock from the host's again.
    guest_time = await (await box.exec("date", ["+%s"])).wait()
    assert abs(int(guest_time.stdout) - time.time()) < 120, guest_time.stdout
    await box.stop()
    assert not pid_alive(made["kept_vmm"])
    assert (await runtime.get_info("kept")).status == "stopped"
    await runtime.remove("kept")
    assert await runtime.list_info() == []


async def root_fs_kib(box: boxlite.Box) -> tuple[int, int]:
    """(size, available) of the box's root file system in KiB."""
    result = await (await box.exec("df", ["-k", "/"])).wait()
    fields = result.stdout.splitlines()[-1].split()
    return int(fields[1]), int(fields[3])


async def test_disk_size_gb_sets_the_writable_size(runtime: boxlite.Boxlite, busybox: str) -> None:
    default = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    sized = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, disk_size_gb=12))
    try:
        _, default_free = await root_fs_kib(default)
        _, sized_free = await root_fs_kib(sized)
        gib = 1 << 20
        assert 3 * gib < default_free < 5 * gib
        assert 11 * gib < sized_free < 13 * gib
        # Sparse all the way: the box's own disk holds only what it wrote.
        assert os.stat(Path(sized.info().dir) / "disk.qcow2").st_blocks * 512 < 16 << 20
    finally:
        await default.stop()
        await sized.stop()
    with pytest.raises(boxlite.InvalidOptionError, match="disk_size_gb=0"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, disk_size_gb=0))


STOP_THEN_RESTART = """
import asyncio, sys, boxlite
async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=sys.argv[2], memory_mib=256,
                                                  auto_remove=False, name="shared"))
    await box.stop()
    print("stopped", flush=True)
    sys.stdin.readline()
    try:
        await box.start()
        print("started", flush=True)
    except boxlite.BoxliteError as e:
        print("refused:", e, flush=True)
asyncio.run(main())
"""


async def test_a_stopped_box_is_taken_up_by_another_live_process_and_runs_in_one_at_a_time(
    busybox: str, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STOP_THEN_RESTART,
        str(tmp_path),
        busybox,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), timeout=240) == b"stopped\n"
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
        box = await runtime.get("shared")
        await box.start()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        answer = (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).decode()
        assert answer.startswith("refused:") and f"started by process {os.getpid()}" in answer, answer
        assert (await (await box.exec("true")).wait()).exit_code == 0
    finally:
        await proc.wait()
    await runtime.remove("shared", force=True)


async def test_boxes_never_write_to_the_shared_base_disk(busybox: str, tmp_path: Path) -> None:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
    first = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, auto_remove=False))
    [base] = (tmp_path / "images" / "disks").glob("*.ext4")
    digest, mtime = sparse_file_digest(base), base.stat().st_mtime_ns
    try:
        # Root in the box rewrites, deletes and fills its file system.
        vandal = "echo owned > /etc/passwd && rm -rf /usr && dd if=/dev/urandom of=/big bs=1M count=8 && sync"
        result = await first.run("sh", ["-c", vandal])
        assert result.exit_code == 0, result
        assert os.stat(Path(first.info().dir) / "disk.qcow2").st_blocks * 512 > 8 << 20, "the box wrote its overlay"
        await first.stop()
        assert (sparse_file_digest(base), base.stat().st_mtime_ns) == (digest, mtime)
        # A new box on the same image sees the image as it was.
        second = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
        try:
            passwd = await second.run("sh", ["-c", "head -1 /etc/passwd; test -d /usr && echo usr-there"])
            assert passwd.stdout.startswith("root:") and "usr-there" in passwd.stdout, passwd
        finally:
            await second.stop()
        assert sparse_file_digest(base) == digest
    finally:
        await runtime.remove(first.id, force=True)
