"""Host memory stays bounded whatever the guest sends, and a stalled or hostile guest never
hangs the host: results keep a bounded amount of output (the rest is drained and dropped),
stream reads take limits, a box that sends more than its output window is declared broken,
and a VM that stops reading its channel (its VMM stopped with SIGSTOP) is killed in bounded
time, whatever the host was waiting for."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import boxlite
import pytest
from boxlite.errors import BoxDiedError, OutputLimitError
from boxlite.pool import BoxPool
from conftest import pid_alive

#: Every test here tries an attack for real and checks the host afterwards (`make audit`).
pytestmark = pytest.mark.hostile

MIB = 1024 * 1024


def rss_bytes() -> int:
    """The current resident set of this process (not a high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def assert_vm_killed(box: boxlite.Box, vmm: int) -> None:
    """The box's VMM is gone (within 5 s) and the box is marked crashed."""
    for _ in range(50):
        if not pid_alive(vmm):
            break
        await asyncio.sleep(0.1)
    assert not pid_alive(vmm), f"the VM of box {box.id} was not killed"
    assert box.info().status == "crashed"


@contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Samples the current RSS every 20 ms in a thread; yields a list whose one item becomes the
    largest growth over the starting RSS, in bytes."""
    base = rss_bytes()
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_bytes() - base)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], rss_bytes() - base)


# -- results keep a bounded amount of output ------------------------------------------------


async def test_run_keeps_max_output_bytes_per_stream_and_drains_the_rest(shared_box: boxlite.Box) -> None:
    script = "head -c 20000000 /dev/zero; echo tail-of-stderr >&2"
    result = await shared_box.run("sh", ["-c", script])
    assert result.exit_code == 0, "the process was not held up by the cap"
    assert len(result.stdout_bytes) == 4 * MIB, "the default cap is 4 MiB per stream"
    assert result.truncated and result.stdout_dropped == 20_000_000 - 4 * MIB
    assert result.stderr == "tail-of-stderr\n" and result.stderr_dropped == 0

    small = await shared_box.run(
        "sh", ["-c", "head -c 5000 /dev/zero; head -c 3000 /dev/zero >&2"], max_output_bytes=1000
    )
    assert (len(small.stdout_bytes), small.stdout_dropped) == (1000, 4000)
    assert (len(small.stderr_bytes), small.stderr_dropped) == (1000, 2000)

    whole = await shared_box.run("echo", ["fits"])
    assert whole.stdout == "fits\n" and not whole.truncated


async def test_exec_wait_and_the_sync_api_report_truncation(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("sh", ["-c", "head -c 300000 /dev/zero"], max_output_bytes=100_000)
    result = await execution.wait()
    assert result.truncated and (len(result.stdout_bytes), result.stdout_dropped) == (100_000, 200_000)
    sync_box = boxlite.SyncBox(shared_box)
    synced = await asyncio.to_thread(sync_box.run, "sh", ["-c", "head -c 3000 /dev/zero"], max_output_bytes=10)
    assert synced.truncated and synced.stdout_dropped == 2990


async def test_simplebox_option_caps_results(runtime: boxlite.Boxlite, busybox: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=busybox, memory_mib=256, runtime=runtime, max_output_bytes=2048) as box:
        result = await box.exec("sh", "-c", "head -c 100000 /dev/zero")
        assert result.truncated and len(result.stdout_bytes) == 2048 and result.stdout_dropped == 100000 - 2048


async def test_out_of_range_output_caps_are_refused(shared_box: boxlite.Box) -> None:
    with pytest.raises(boxlite.InvalidOptionError, match="max_output_bytes"):
        await shared_box.run("true", max_output_bytes=2**31)


async def test_run_of_200_mib_keeps_host_memory_bounded(shared_box: boxlite.Box) -> None:
    with peak_rss_growth() as grown:
        result = await shared_box.run("sh", ["-c", "head -c 209715200 /dev/zero"])
    assert result.stdout_dropped == 200 * MIB - 4 * MIB
    assert grown[0] < 64 * MIB, f"RSS grew by {grown[0] / MIB:.0f} MiB while run() drained 200 MiB"


# -- stream reads take limits --------------------------------------------------------------


async def test_stream_reads_refuse_to_hold_more_than_their_limit(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("sh", ["-c", "head -c 300000 /dev/zero; echo; echo short"])
    stdout = execution.stdout()
    with pytest.raises(OutputLimitError, match="limit of 100000"):
        await stdout.readline(limit=100_000)
    with pytest.raises(OutputLimitError, match="readexactly"):
        await stdout.readexactly(10**12)
    assert len(await stdout.readexactly(300_001)) == 300_001, "bytes over a line limit stay readable"
    assert await stdout.readline() == b"short\n"
    await execution.wait()

    flood = await shared_box.exec("sh", ["-c", "head -c 3000000 /dev/zero"])
    with pytest.raises(OutputLimitError, match="read's limit"):
        await flood.stdout().read(limit=1_000_000)
    await flood.kill()
    await flood.wait()


# -- a hostile guest that sends beyond its window ------------------------------------------

# Runs as root in the box: takes the agent's own channel (pidfd_getfd on PID 1's port) and
# writes forged Output frames. First a flood for an execution the host does not know (dropped
# at once), then more output for its own execution than the host ever granted.
FORGE = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
own_id = int(sys.stdin.readline())
pidfd = os.pidfd_open(1)
port = -1
for fd in range(64):
    try:
        target = os.readlink(f"/proc/1/fd/{fd}")
    except OSError:
        continue
    if "vport" in target:
        port = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        break
assert port >= 0, "no channel found"

def varint(n):
    out = bytearray()
    while True:
        if n >> 7:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        else:
            out.append(n)
            return bytes(out)

def output(exec_id, data):
    # GuestMessage::Output { exec_id, stream: Stdout, data } in postcard (variant 1, pinned by
    # the protocol crate's `output_is_variant_1_on_the_wire`), length-prefixed.
    payload = varint(1) + varint(exec_id) + varint(0) + varint(len(data)) + data
    return struct.pack("<I", len(payload)) + payload

def send(frame):
    # One write per frame (a port write takes up to 32 KiB), so frames never interleave.
    assert os.write(port, frame) == len(frame)

chunk = b"F" * 16384
for _ in range(int(sys.argv[1]) // len(chunk)):
    send(output(424242, chunk))
for _ in range(2 * 1024 * 1024 // len(chunk)):
    send(output(own_id, chunk))
print("sent", flush=True)
"""


@pytest.fixture
async def python_vm(runtime: boxlite.Boxlite, python_image: str) -> AsyncIterator[boxlite.Box]:
    """A fresh Debian box these tests may break."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=python_image, memory_mib=512))
    yield box
    await box.stop()


async def test_a_guest_that_sends_beyond_its_window_is_declared_broken(python_vm: boxlite.Box) -> None:
    vmm = python_vm.info().vmm_pid
    assert vmm is not None
    # Nobody reads this execution's output (no wait(), no stream read): the host granted it one
    # window and never more.
    execution = await python_vm.exec("python3", ["-c", FORGE, str(64 * MIB)])
    with peak_rss_growth() as grown:
        await execution.stdin().send_input(f"{execution.id}\n")
        for _ in range(1200):
            if python_vm.info().status != "running":
                break
            await asyncio.sleep(0.1)
    with pytest.raises(BoxDiedError, match="window it was granted") as died:
        await asyncio.wait_for(execution.wait(), timeout=30)
    assert "declared broken and its VM killed" in str(died.value)
    await assert_vm_killed(python_vm, vmm)
    assert grown[0] < 64 * MIB, f"RSS grew by {grown[0] / MIB:.0f} MiB while the guest flooded its channel"
    with pytest.raises(BoxDiedError, match="window"):
        await python_vm.run("true")


# Runs as root in the box: stops the agent's reaper thread (the one thread of PID 1 blocked in
# waitid) with ptrace, so the agent keeps answering the host (probes, new executions) but never
# learns that a process exited, and so never confirms a kill.
HOLD_REAPER = r"""
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_SEIZE, PTRACE_INTERRUPT, SYS_WAITID = 0x4206, 0x4207, 247
reapers = [
    tid for tid in map(int, os.listdir("/proc/1/task"))
    if open(f"/proc/1/task/{tid}/syscall").read().split()[0] == str(SYS_WAITID)
]
assert len(reapers) == 1, reapers
for request in (PTRACE_SEIZE, PTRACE_INTERRUPT):
    assert libc.ptrace(request, reapers[0], None, None) == 0, os.strerror(ctypes.get_errno())
print("held", reapers[0], flush=True)
time.sleep(3600)  # the hold lasts as long as this tracer
"""


async def test_an_agent_that_does_not_confirm_a_kill_gets_its_vm_killed(python_vm: boxlite.Box) -> None:
    vmm = python_vm.info().vmm_pid
    assert vmm is not None
    holder = await python_vm.exec("python3", ["-c", HOLD_REAPER])
    line = await asyncio.wait_for(holder.stdout().readline(limit=256), timeout=60)
    assert line.startswith(b"held "), line
    # The agent still answers: a new execution starts, and its output arrives.
    probe = await python_vm.exec("echo", ["still answering"])
    assert await asyncio.wait_for(probe.stdout().readline(limit=256), timeout=30) == b"still answering\n"
    started = time.monotonic()
    with pytest.raises(BoxDiedError, match="did not confirm a kill within 10 s") as died:
        await asyncio.wait_for(python_vm.run("sleep", ["1000"], timeout=2), timeout=120)
    assert "declared broken and its VM killed" in str(died.value)
    # The timeout at 2 s, the kill confirmation due 10 s later.
    elapsed = time.monotonic() - started
    assert 11 < elapsed < 30, f"declared broken after {elapsed:.1f} s"
    await assert_vm_killed(python_vm, vmm)


# -- a guest that stops reading its channel (its VMM stopped) -------------------------------


@pytest.fixture
async def stoppable(runtime: boxlite.Boxlite, busybox: str) -> AsyncIterator[tuple[boxlite.Box, int]]:
    """A fresh busybox box and its VMM's pid; whatever the test left is killed afterwards."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256))
    vmm = box.info().vmm_pid
    assert vmm is not None
    try:
        yield box, vmm
    finally:
        if pid_alive(vmm):
            os.kill(vmm, signal.SIGCONT)
        await box.stop()


async def assert_killed_within(box: boxlite.Box, vmm: int, started: float, seconds: float) -> None:
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"the host waited {elapsed:.1f} s"
    await assert_vm_killed(box, vmm)


async def test_wait_on_a_stalled_guest_fails_and_kills_its_vm(stoppable: tuple[boxlite.Box, int]) -> None:
    box, vmm = stoppable
    execution = await box.exec("sleep", ["1000"])
    await asyncio.sleep(0.5)
    os.kill(vmm, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(BoxDiedError, match="liveness probe"):
        await asyncio.wait_for(execution.wait(), timeout=120)
    # Heartbeat every 5 s, answer within 10 s.
    await assert_killed_within(box, vmm, started, 30)


async def test_the_timeout_contract_holds_when_the_guest_stalls(stoppable: tuple[boxlite.Box, int]) -> None:
    box, vmm = stoppable
    run = asyncio.ensure_future(box.run("sleep", ["1000"], timeout=2))
    await asyncio.sleep(1)
    os.kill(vmm, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(BoxDiedError, match="declared broken"):
        await asyncio.wait_for(run, timeout=120)
    # The timeout fires at 2 s; the kill it sends is never confirmed (10 s), or a probe fails first.
    await assert_killed_within(box, vmm, started, 20)


async def test_copy_in_and_stop_do_not_hang_on_a_stalled_guest(
    stoppable: tuple[boxlite.Box, int], tmp_path: Path
) -> None:
    box, vmm = stoppable
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 * MIB))
    os.kill(vmm, signal.SIGSTOP)
    started = time.monotonic()
    # 8 MiB cannot fit the channel's buffers: a write stalls (10 s) or the probe fails first.
    with pytest.raises(BoxDiedError):
        await asyncio.wait_for(box.copy_in(str(big), "/tmp/"), timeout=120)
    await assert_killed_within(box, vmm, started, 30)
    stopped = time.monotonic()
    await asyncio.wait_for(box.stop(), timeout=60)
    assert time.monotonic() - stopped < 5


async def test_a_copy_out_that_stops_sending_is_given_up_and_its_packer_killed(
    stoppable: tuple[boxlite.Box, int], tmp_path: Path
) -> None:
    """/proc/kmsg never ends: the box's packer blocks reading it while the agent keeps
    answering probes. The copy ends with an error 30 s after the last byte, nothing is left at
    the destination, and the box works on."""
    box, _ = stoppable
    # Read what the kernel logged so far, so that the packer's first read already blocks.
    drained = await box.run("sh", ["-c", "cat /proc/kmsg > /dev/null & sleep 1; kill $!"])
    assert drained.exit_code == 0, drained.stderr
    started = time.monotonic()
    with pytest.raises(boxlite.errors.CopyError, match="the box sent nothing for 30 s"):
        await asyncio.wait_for(box.copy_out("/proc/kmsg", tmp_path / "kmsg"), timeout=120)
    elapsed = time.monotonic() - started
    assert 29 < elapsed < 60, f"given up after {elapsed:.1f} s"
    assert list(tmp_path.iterdir()) == []
    assert box.info().status == "running"
    # No process of the box holds /proc/kmsg open any more: the packer was killed.
    holders = await box.run("sh", ["-c", "ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -c /proc/kmsg"])
    assert holders.stdout == "0\n", holders.stdout


async def test_a_pool_health_check_on_a_stalled_box_fails_and_a_fresh_box_is_leased(
    runtime: boxlite.Boxlite, busybox: str
) -> None:
    pool = BoxPool(
        boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256),
        runtime=runtime,
        min_idle=1,
        max_size=1,
        max_uses=100,
        acquire_timeout=120,
    )
    try:
        async with pool.lease() as lease:
            stalled_id, stalled = lease.box.id, lease.box.info().vmm_pid
        assert stalled is not None
        # Idle in the pool (max_size 1: the next lease must health-check this very box).
        os.kill(stalled, signal.SIGSTOP)
        started = time.monotonic()
        async with pool.lease() as lease:
            assert lease.box.id != stalled_id
            assert (await lease.box.run("echo", ["fresh"])).stdout == "fresh\n"
        # The check's `true` gets no answer (10 s), the stalled VM is killed, a new box boots.
        elapsed = time.monotonic() - started
        assert elapsed < 60, f"the lease took {elapsed:.1f} s"
        assert not pid_alive(stalled), "the stalled box's VM was killed"
    finally:
        if pid_alive(stalled):
            os.kill(stalled, signal.SIGCONT)
        await pool.close()


def test_interpreter_exit_with_a_stalled_box_kills_its_vm(busybox: str, tmp_path: Path) -> None:
    script = f"""
import asyncio, os, signal, boxlite
rt = boxlite.Boxlite(boxlite.Options(home_dir={str(tmp_path)!r}))

async def main():
    box = await rt.create(boxlite.BoxOptions(rootfs_path={busybox!r}, memory_mib=256))
    await box.exec("sleep", ["1000"])  # an execution open at exit, too
    os.kill(box.info().vmm_pid, signal.SIGSTOP)
    print(box.info().vmm_pid, flush=True)

asyncio.run(main())
"""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - started
    vmm = int(proc.stdout.split()[-1])
    if pid_alive(vmm):
        os.kill(vmm, signal.SIGKILL)
        raise AssertionError(f"the stalled VM outlived the interpreter; stderr: {proc.stderr}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # Boot, then at most the exit's stop deadline (20 s) and the kill.
    assert elapsed < 90, f"the interpreter took {elapsed:.1f} s to exit"


async def test_stop_of_a_stalled_guest_kills_it_in_bounded_time(stoppable: tuple[boxlite.Box, int]) -> None:
    box, vmm = stoppable
    os.kill(vmm, signal.SIGSTOP)
    started = time.monotonic()
    await asyncio.wait_for(box.stop(), timeout=120)
    assert time.monotonic() - started < 20
    assert not pid_alive(vmm)
