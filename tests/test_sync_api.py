"""The sync API (``boxlite.sync_api``) on real boxes: from plain threads and from inside a
running event loop (as in Jupyter or a FastAPI handler)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import boxlite
import pytest
from boxlite.sync_api import SyncBoxlite, SyncSimpleBox, iterate_sync, run_sync
from conftest import pid_alive


@pytest.fixture(scope="module")
def sync_runtime(runtime: boxlite.Boxlite) -> SyncBoxlite:
    return SyncBoxlite(runtime=runtime)


def test_sync_api_from_a_plain_thread(sync_runtime: SyncBoxlite, busybox: str) -> None:
    """No event loop anywhere in the calling thread: the whole Boxlite/Box/Execution surface."""
    outcome: dict[str, object] = {}

    def work() -> None:
        assert not _thread_has_loop()
        box = sync_runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, name="sync-thread"))
        try:
            outcome["run"] = box.run("sh", ["-c", "echo out; echo err >&2; exit 3"])
            execution = box.exec("sh", ["-c", "echo started; sleep 1; echo done"])
            outcome["wait"] = execution.wait()
            outcome["got"] = sync_runtime.get("sync-thread").id == box.id
            outcome["info"] = sync_runtime.get_info(box.id).status
            outcome["listed"] = box.id in {i.id for i in sync_runtime.list_info()}
        finally:
            box.stop()
        outcome["stopped"] = box.info().status

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    run = outcome["run"]
    assert isinstance(run, boxlite.ExecResult)
    assert (run.exit_code, run.stdout, run.stderr) == (3, "out\n", "err\n")
    waited = outcome["wait"]
    assert isinstance(waited, boxlite.ExecResult)
    assert waited.stdout == "started\ndone\n"
    assert outcome["got"] is True
    assert outcome["info"] == "running"
    assert outcome["listed"] is True
    assert outcome["stopped"] != "running"


async def test_sync_api_inside_a_running_loop(busybox: str, runtime: boxlite.Boxlite) -> None:
    """Called from a coroutine (this test runs in pytest-asyncio's loop): no ``asyncio.run`` error,
    and the box works."""
    asyncio.get_running_loop()  # we are inside a running loop
    with SyncSimpleBox(rootfs_path=busybox, memory_mib=256, runtime=runtime) as box:
        result = box.exec("sh", "-c", "echo $((6 * 7))")
        assert result.stdout == "42\n"
        vmm_pid = box.box.info().vmm_pid
        assert vmm_pid is not None and pid_alive(vmm_pid)
    assert not pid_alive(vmm_pid)


def test_execution_kill_and_signal(sync_runtime: SyncBoxlite, busybox: str) -> None:
    box = sync_runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    try:
        execution = box.exec("sleep", ["300"])
        execution.kill()
        assert execution.wait().signal == 9
        execution = box.exec("sleep", ["300"])
        execution.signal(15)
        assert execution.wait().exit_code == 128 + 15
    finally:
        sync_runtime.remove(box.id, force=True)
    with pytest.raises(boxlite.BoxNotFoundError):
        sync_runtime.get(box.id)


def test_wait_timeout_kills_the_execution(sync_runtime: SyncBoxlite, busybox: str) -> None:
    """A sync wait that times out cancels the wait, which kills the process in the box."""
    box = sync_runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    try:
        execution = box.exec("sh", ["-c", "echo $$ > /tmp/pid; exec sleep 300"])
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="did not finish within 1"):
            execution.wait(timeout=1)
        assert time.monotonic() - started < 30
        # The killed process is gone from the box's process table.
        gone = 'for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$(cat /tmp/pid)" || exit 0; sleep 0.5; done; exit 1'
        check = box.run("sh", ["-c", gone])
        assert check.exit_code == 0, check
    finally:
        box.stop()


async def test_run_sync_refuses_the_library_loop() -> None:
    """Calling run_sync from the library's own loop thread would deadlock: it raises instead."""

    async def nested() -> str:
        coro = asyncio.sleep(0, "x")
        try:
            run_sync(coro)
        except RuntimeError as err:
            return str(err)
        return "no error"

    message = run_sync(nested())
    assert "would deadlock" in message


def test_errors_cross_the_thread_with_their_type(sync_runtime: SyncBoxlite) -> None:
    with pytest.raises(boxlite.BoxNotFoundError):
        sync_runtime.get("no-such-box")
    with pytest.raises(boxlite.ImageError):
        sync_runtime.create(boxlite.BoxOptions(rootfs_path="/nonexistent/layout", memory_mib=256))


def test_interpreter_exit_stops_sync_boxes(busybox: str, tmp_path: Path) -> None:
    """A script that leaves a sync box running exits promptly, and the box's VM with it."""
    script = f"""
import boxlite
rt = boxlite.SyncBoxlite(boxlite.Options(home_dir={str(tmp_path)!r}))
box = rt.create(boxlite.BoxOptions(rootfs_path={busybox!r}, memory_mib=256))
print(box.info().vmm_pid, flush=True)
print(box.run("echo", ["alive"]).stdout, end="", flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pid_line, alive = proc.stdout.splitlines()
    assert alive == "alive"
    assert not pid_alive(int(pid_line))


def test_iterate_sync_over_an_async_stream(sync_runtime: SyncBoxlite, busybox: str) -> None:
    """``iterate_sync`` steps an async iterator on the library loop and closes it on early exit."""
    box = sync_runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    closed: list[bool] = []

    async def lines(limit: int | None) -> AsyncIterator[str]:
        n = 0
        try:
            while limit is None or n < limit:
                yield (await box.box.run("echo", [f"line {n}"])).stdout.strip()
                n += 1
        finally:
            closed.append(True)

    try:
        assert list(iterate_sync(lines(3))) == ["line 0", "line 1", "line 2"]
        endless = iterate_sync(lines(None))
        assert next(endless) == "line 0"
        endless.close()
        assert closed == [True, True]
    finally:
        box.stop()


def _thread_has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_ctrl_c_interrupts_a_sync_call(busybox: str, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) during a blocking sync call raises KeyboardInterrupt in the script at once,
    and the script still exits with no VM left behind."""
    script = f"""
import boxlite
rt = boxlite.SyncBoxlite(boxlite.Options(home_dir={str(tmp_path)!r}))
box = rt.create(boxlite.BoxOptions(rootfs_path={busybox!r}, memory_mib=256))
print(box.info().vmm_pid, flush=True)
try:
    box.run("sleep", ["300"])
except KeyboardInterrupt:
    print("interrupted", flush=True)
    print(box.run("echo", ["still usable"]).stdout, end="", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    vmm = int(proc.stdout.readline())
    time.sleep(1.0)  # let `sleep 300` start
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == ["interrupted", "still usable"]
    assert time.monotonic() - started < 30
    assert not pid_alive(vmm)


def test_sync_streams_stdin_files_and_metrics(sync_runtime: SyncBoxlite, busybox: str, tmp_path: Path) -> None:
    box = sync_runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    try:
        execution = box.exec("sh", ["-c", "while read x; do echo got:$x; done"])
        stdin = execution.stdin()
        stdin.send_input(b"one\n")
        assert execution.stdout().readline() == b"got:one\n"
        stdin.send_input("two\n")
        stdin.close()
        assert list(execution.stdout()) == ["got:two\n"]
        assert execution.wait().exit_code == 0
        (tmp_path / "note.txt").write_text("sync copy\n")
        box.copy_in(tmp_path / "note.txt", "/tmp")
        box.copy_out("/tmp/note.txt", tmp_path / "back.txt")
        assert (tmp_path / "back.txt").read_text() == "sync copy\n"
        assert box.metrics().execs_started >= 3
        assert sync_runtime.metrics().boxes_running >= 1
    finally:
        box.stop()
