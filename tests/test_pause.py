"""Pause and resume (QMP ``stop``/``cont`` on the box's VMM): a paused box runs nothing, says
``paused`` (to other processes of its home too), is not declared broken by the agent's liveness
probe however long it stays paused, refuses new work with an error naming ``resume()``, and
stops cleanly. An execution's timeout is host time: it keeps counting through a pause and its
kill lands once the box resumes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boxlite
import pytest
from conftest import pid_alive

# The agent client's deadlines (crates/engine/src/agent/mod.rs, `Deadlines::default`): a
# liveness probe every 5 s while executions are open, 10 s to answer it. A box paused longer
# than both would be declared broken and killed if the probe did not know about the pause.
HEARTBEAT_S = 5
ANSWER_DEADLINE_S = 10
HELD_PAUSED_S = HEARTBEAT_S + ANSWER_DEADLINE_S + 3

COUNTER = "i=0; while true; do i=$((i+1)); echo $i >> /shared/count; sleep 0.05; done"

STATUS_FROM_ANOTHER_PROCESS = """
import asyncio, json, sys
import boxlite
async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    info = await runtime.get_info(sys.argv[2])
    listed = {i.id: i.status for i in await runtime.list_info()}
    print(json.dumps({"info": info.status, "listed": listed.get(sys.argv[2])}))
asyncio.run(main())
"""


PAUSE_KEPT_AND_HANG = """
import asyncio, json, sys, boxlite
async def main():
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=sys.argv[2], memory_mib=256,
                                                  auto_remove=False, name="kept"))
    await box.run("sh", ["-c", "echo before-pause > /root/note.txt"])
    await box.pause()
    print(json.dumps({"id": box.id, "vmm_pid": box.info().vmm_pid}), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def count(path: Path) -> int:
    """Lines the guest's counting loop appended so far (read on the host, through the share)."""
    return len(path.read_text().splitlines()) if path.exists() else 0


async def until_counting(path: Path, at_least: int, within: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while count(path) < at_least:
        assert loop.time() < deadline, f"the counting loop never reached {at_least}: {count(path)}"
        await asyncio.sleep(0.1)


async def test_a_paused_box_freezes_says_paused_outlives_the_liveness_probe_and_resumes(
    busybox: str, tmp_path: Path
) -> None:
    home, shared = tmp_path / "home", tmp_path / "shared"
    shared.mkdir()
    counter = shared / "count"
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, volumes=[(str(shared), "/shared")], auto_remove=False)
    )
    try:
        # The loop stays open as an execution: the liveness probe runs all along.
        loop_exec = await box.exec("sh", ["-c", COUNTER])
        await until_counting(counter, 5)

        await box.pause()
        assert box.info().status == "paused"
        paused_at = asyncio.get_running_loop().time()
        frozen = count(counter)
        await asyncio.sleep(1)
        assert count(counter) == frozen, "the guest kept counting while paused"

        # Another process of the home sees the box paused.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            STATUS_FROM_ANOTHER_PROCESS,
            str(home),
            box.id,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert json.loads(out.decode().strip().splitlines()[-1]) == {"info": "paused", "listed": "paused"}

        # New work is refused at once, with the fix in the message.
        for attempt in (box.run("true"), box.read_file("/etc/hostname"), box.copy_out("/etc/hostname", tmp_path / "h")):
            started = asyncio.get_running_loop().time()
            with pytest.raises(boxlite.errors.BoxStoppedError, match=r"is paused.*resume\(\)"):
                await attempt
            assert asyncio.get_running_loop().time() - started < 2
        await box.pause()  # pausing a paused box does nothing

        # Held paused past the probe interval plus its answer deadline.
        await asyncio.sleep(max(0.0, HELD_PAUSED_S - (asyncio.get_running_loop().time() - paused_at)))
        assert count(counter) == frozen, "the guest kept counting while paused"
        assert box.info().status == "paused", box.info().last_error
        vmm = box.info().vmm_pid
        assert vmm is not None and pid_alive(vmm)

        await box.resume()
        assert box.info().status == "running"
        await until_counting(counter, frozen + 5, within=30)
        result = await box.run("echo", ["alive"])
        assert result.stdout == "alive\n"
        # The guest's clock stood still while paused: resume() sets it to the host's again.
        guest_now = int((await box.run("date", ["+%s"])).stdout)
        assert abs(guest_now - time.time()) < 2, (guest_now, time.time())
        await box.resume()  # resuming a running box does nothing
        # The loop's execution survived the pause.
        await loop_exec.kill()
        await loop_exec.wait()
        assert box.info().status == "running", box.info().last_error
    finally:
        await runtime.remove(box.id, force=True)


async def test_a_timeout_keeps_counting_through_a_pause_and_fires_after_resume(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("sleep", ["9999"], timeout=2)
    await shared_box.pause()
    try:
        waiter = asyncio.ensure_future(execution.wait())
        # The timeout runs out on the host during the pause; the kill needs the guest.
        await asyncio.sleep(4)
        assert not waiter.done(), "the execution ended while its box was paused"
    finally:
        await shared_box.resume()
    result = await asyncio.wait_for(waiter, 30)
    assert result.timed_out and result.exit_code == 124
    assert (await shared_box.run("true")).exit_code == 0
    assert shared_box.info().status == "running"


async def test_stopping_a_paused_box_leaves_no_vmm_and_a_stopped_box_cannot_pause(
    runtime: boxlite.Boxlite, busybox: str
) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, auto_remove=False))
    vmm = box.info().vmm_pid
    assert vmm is not None
    await box.pause()
    await box.stop()
    assert box.info().status == "stopped"
    assert not pid_alive(vmm)
    with pytest.raises(boxlite.errors.BoxStoppedError, match="pause needs a running box"):
        await box.pause()
    with pytest.raises(boxlite.errors.BoxStoppedError, match="resume needs a running box"):
        await box.resume()
    await runtime.remove(box.id)


async def test_a_paused_box_whose_owner_died_is_resumed_and_reattached(busybox: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PAUSE_KEPT_AND_HANG,
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
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert pid_alive(made["vmm_pid"])
    # The next runtime of the home adopts the VM: its agent cannot answer until it runs again.
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
    [info] = await runtime.list_info()
    assert (info.id, info.status, info.vmm_pid) == (made["id"], "running", made["vmm_pid"])
    box = await runtime.get("kept")
    assert (await box.run("cat", ["/root/note.txt"])).stdout == "before-pause\n"
    await box.stop()
    assert not pid_alive(made["vmm_pid"])
    await runtime.remove("kept")


def test_the_sync_api_pauses_and_resumes(runtime: boxlite.Boxlite, busybox: str) -> None:
    with boxlite.SyncSimpleBox(rootfs_path=busybox, memory_mib=256, runtime=runtime) as box:
        box.pause()
        assert box.box.info().status == "paused"
        with pytest.raises(boxlite.errors.BoxStoppedError, match=r"resume\(\)"):
            box.exec("true")
        box.resume()
        assert box.box.info().status == "running"
        assert box.exec("echo", "ok").stdout == "ok\n"
