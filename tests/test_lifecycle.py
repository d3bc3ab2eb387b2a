"""Box lifecycle: start, stop, auto_remove, use after stop, a VM that dies, accelerator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import boxlite
import pytest
from conftest import pid_alive


async def test_stop_ends_qemu_and_removes_the_overlay(runtime: boxlite.Boxlite, busybox: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    info = box.info()
    assert info.status == "running" and info.vmm_pid is not None
    box_dir = Path(info.dir)
    assert (box_dir / "disk.qcow2").is_file() and (box_dir / "config.json").is_file()
    await box.stop()
    assert not pid_alive(info.vmm_pid)
    assert not box_dir.exists()
    assert box.info().status == "removed"
    # Removing an auto-removed box is fine (the reference docs' examples do it).
    await runtime.remove(box.id)
    with pytest.raises(boxlite.BoxNotFoundError):
        await runtime.get(box.id)


async def test_kept_box_keeps_its_files_across_stop_and_start(runtime: boxlite.Boxlite, busybox: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, auto_remove=False, name="kept"))
    try:
        assert (await (await box.exec("sh", ["-c", "echo persisted > /root/state.txt"])).wait()).exit_code == 0
        await box.stop()
        assert box.info().status == "stopped"
        assert Path(box.info().dir, "disk.qcow2").is_file()
        await box.start()
        result = await (await box.exec("cat", ["/root/state.txt"])).wait()
        assert result.stdout == "persisted\n"
        assert (await runtime.get("kept")).id == box.id
    finally:
        await runtime.remove(box.id, force=True)
    assert not Path(box.info().dir).exists()


async def test_remove_of_a_running_box_needs_force(runtime: boxlite.Boxlite, busybox: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    pid = box.info().vmm_pid
    assert pid is not None
    with pytest.raises(boxlite.InvalidOptionError, match=r"force=True"):
        await runtime.remove(box.id)
    await runtime.remove(box.id, force=True)
    assert not pid_alive(pid)


async def test_use_after_stop_is_a_clear_error(runtime: boxlite.Boxlite, busybox: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=busybox, memory_mib=256, runtime=runtime) as box:
        low_level = box.box
    with pytest.raises(boxlite.BoxStoppedError, match="not started"):
        await box.exec("true")
    with pytest.raises(boxlite.BoxStoppedError, match="removed"):
        await low_level.exec("true")


async def test_unknown_box_id(runtime: boxlite.Boxlite) -> None:
    with pytest.raises(boxlite.BoxNotFoundError, match="no-such-box"):
        await runtime.get("no-such-box")
    with pytest.raises(boxlite.BoxNotFoundError):
        await runtime.remove("no-such-box")


async def test_a_killed_vm_is_noticed_and_the_runtime_keeps_working(runtime: boxlite.Boxlite, busybox: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    neighbour = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    # The neighbour is busy when the first VM dies, and its execution finishes normally.
    gate = await neighbour.exec("sh", ["-c", "read line; echo neighbour $line"])
    running = await box.exec("sleep", ["600"])
    pid = box.info().vmm_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(boxlite.BoxDiedError, match=r"exited unexpectedly|closed"):
        await running.wait()
    assert box.info().status == "crashed"
    with pytest.raises(boxlite.BoxDiedError):
        await box.exec("true")
    await runtime.remove(box.id)
    # Other boxes are unaffected: the running execution goes on, new ones start.
    try:
        assert neighbour.info().status == "running"
        await gate.stdin().send_input("lives\n")
        await gate.stdin().close()
        assert (await gate.wait()).stdout == "neighbour lives\n"
        assert (await neighbour.run("echo", ["again"])).stdout == "again\n"
        other = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
        assert (await (await other.exec("true")).wait()).exit_code == 0
        await other.stop()
    finally:
        await neighbour.stop()


def vmm_processes_under(home: Path) -> list[str]:
    """Command lines of live processes (QEMU, passt) that name a path under ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and pid_alive(int(entry.name)):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(home) in cmdline and "pytest" not in cmdline:
                found.append(cmdline)
    return found


async def test_a_create_that_fails_after_qemu_started_leaves_nothing(
    busybox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
    # QEMU starts, then the agent's hello misses its deadline: the boot fails after the launch.
    monkeypatch.setenv("BOXLITE_BOOT_TIMEOUT", "0")
    with pytest.raises(boxlite.BoxliteError, match="did not answer within 0 s"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, name="doomed"))
    assert list((tmp_path / "boxes").iterdir()) == []
    assert await runtime.list_info() == []
    assert vmm_processes_under(tmp_path) == []
    monkeypatch.delenv("BOXLITE_BOOT_TIMEOUT")
    # The name is free again and the home works.
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, name="doomed"))
    assert (await box.run("echo", ["fine"])).stdout == "fine\n"
    await box.stop()


async def test_accelerator_is_probed_and_reported(runtime: boxlite.Boxlite, shared_box: boxlite.Box) -> None:
    choice = await runtime.accelerator()
    assert choice["accel"] in {"kvm", "tcg"}
    assert choice["reason"]
    info = shared_box.info()
    assert info.accel == choice["accel"]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert choice["accel"] == "tcg"
    # The verdict is cached per host in the home directory.
    assert (runtime.home / "accel.json").is_file() or os.environ.get("BOXLITE_ACCEL")


async def test_timings_are_recorded(shared_box: boxlite.Box) -> None:
    timings = shared_box.info().timings
    assert timings["boot_ms"] > 0 and timings["guest_uptime_ms"] > 0


EXIT_SCRIPT = """
import asyncio, sys
import boxlite

async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[2]))
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=sys.argv[1], memory_mib=256))
    result = await (await box.exec("echo", ["ok"])).wait()
    print(box.info().vmm_pid, result.stdout.strip(), flush=True)
    if sys.argv[3] == "stop":
        await box.stop()

asyncio.run(main())
"""


@pytest.mark.parametrize("ending", ["stop", "stop", "leave-running", "leave-running", "leave-running"])
def test_interpreter_exit_is_clean_and_stops_every_vm(busybox: str, tmp_path: Path, ending: str) -> None:
    """Exiting right after engine calls must not crash, and no VM outlives its interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, busybox, str(tmp_path), ending],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    pid, word = done.stdout.split()
    assert word == "ok"
    assert not pid_alive(int(pid))
