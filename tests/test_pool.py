"""``boxlite.pool.BoxPool`` on real boxes: pre-warming, leases, reuse, exhaustion, broken boxes,
retirement, closing, sync use and interpreter exit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import boxlite
import pytest
from boxlite.pool import BoxPool, Lease
from boxlite.sync_api import SyncBox
from conftest import pid_alive, vmms_under


@pytest.fixture(scope="module")
def box_options(busybox: str) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256)


@pytest.fixture
async def make_pool(runtime: boxlite.Boxlite, box_options: boxlite.BoxOptions) -> AsyncIterator[Callable[..., BoxPool]]:
    """Makes pools on the test runtime and closes them after the test, whatever happened."""
    pools: list[BoxPool] = []

    def make(**kwargs: object) -> BoxPool:
        kwargs.setdefault("runtime", runtime)
        pool = BoxPool(kwargs.pop("options", box_options), **kwargs)  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


def vmm_pid(lease: Lease) -> int:
    pid = lease.box.info().vmm_pid
    assert pid is not None
    return pid


async def eventually(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def running_box_ids(runtime: boxlite.Boxlite) -> set[str]:
    return {info.id for info in await runtime.list_info() if info.status == "running"}


async def test_start_prewarms_min_idle(make_pool: Callable[..., BoxPool], runtime: boxlite.Boxlite) -> None:
    before = await running_box_ids(runtime)
    pool = make_pool(min_idle=2, max_size=3)
    assert pool.stats().idle == 0
    await pool.start()
    stats = pool.stats()
    assert (stats.idle, stats.created, stats.leased, stats.starting) == (2, 2, 0, 0)
    prewarmed = await running_box_ids(runtime) - before
    assert len(prewarmed) == 2
    # The pre-warmed boxes are the ones leased: no boot on the lease path.
    async with pool.lease() as lease:
        assert lease.box.id in prewarmed
        assert (await lease.box.run("echo", ["warm"])).stdout == "warm\n"


async def test_max_uses_1_gives_a_fresh_box_and_no_state_leaks(make_pool: Callable[..., BoxPool]) -> None:
    pool = make_pool(min_idle=1, max_size=2)
    async with pool.lease() as first:
        assert first.uses == 1
        assert (await first.box.run("sh", ["-c", "echo secret > /root/tenant-a"])).exit_code == 0
        first_id, first_pid = first.box.id, vmm_pid(first)
    async with pool.lease() as second:
        assert second.box.id != first_id
        leak = await second.box.run("cat", ["/root/tenant-a"])
        assert leak.exit_code != 0 and "secret" not in leak.stdout
    # The first tenant's VM is gone (destroyed in the background after release).
    await eventually(lambda: not pid_alive(first_pid))
    assert pool.stats().leases == 2


async def test_max_uses_above_1_reuses_the_box(make_pool: Callable[..., BoxPool]) -> None:
    pool = make_pool(min_idle=1, max_size=1, max_uses=2)
    async with pool.lease() as lease:
        await lease.box.run("touch", ["/root/kept"])
        first_id = lease.box.id
    async with pool.lease() as lease:
        assert (lease.box.id, lease.uses) == (first_id, 2)
        assert (await lease.box.run("ls", ["/root/kept"])).exit_code == 0
    async with pool.lease() as lease:
        assert lease.box.id != first_id and lease.uses == 1


async def test_exhaustion_fail_raises_at_once(make_pool: Callable[..., BoxPool]) -> None:
    pool = make_pool(min_idle=1, max_size=1, exhaustion="fail")
    async with pool.lease():
        started = time.monotonic()
        with pytest.raises(boxlite.PoolExhaustedError, match="exhaustion='fail'"):
            await pool.acquire()
        assert time.monotonic() - started < 5


async def test_exhaustion_wait_gets_the_released_box(make_pool: Callable[..., BoxPool]) -> None:
    pool = make_pool(min_idle=1, max_size=1, max_uses=3, exhaustion="wait", acquire_timeout=60)
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await eventually(lambda: pool.stats().waiting == 1)
    assert not waiter.done()
    await pool.release(held)
    lease = await asyncio.wait_for(waiter, 30)
    assert lease.box.id == held.box.id and lease.uses == 2
    await pool.release(lease)


async def test_acquire_timeout(make_pool: Callable[..., BoxPool]) -> None:
    pool = make_pool(min_idle=1, max_size=1, acquire_timeout=1.0)
    await pool.start()  # the timeout also bounds a boot: have the box ready first
    async with pool.lease():
        started = time.monotonic()
        with pytest.raises(boxlite.PoolExhaustedError, match=r"acquire_timeout=1\.0"):
            await pool.acquire()
        assert 0.9 <= time.monotonic() - started < 10
        assert pool.stats().waiting == 0


async def test_broken_boxes_are_never_handed_out_again(make_pool: Callable[..., BoxPool]) -> None:
    pool = make_pool(min_idle=1, max_size=2, max_uses=100)
    # mark_broken (e.g. after a result with timed_out).
    async with pool.lease() as lease:
        result = await lease.box.run("sleep", ["30"], timeout=0.5)
        assert result.timed_out
        lease.mark_broken()
        marked_id, marked_pid = lease.box.id, vmm_pid(lease)
    # An exception escaping the block.
    with pytest.raises(RuntimeError, match="tool crashed"):
        async with pool.lease() as lease:
            raised_id, raised_pid = lease.box.id, vmm_pid(lease)
            raise RuntimeError("tool crashed")
    await eventually(lambda: not pid_alive(marked_pid) and not pid_alive(raised_pid))
    assert pool.stats().broken == 2
    # A box whose VM died while idle fails its health check and is replaced.
    await pool.start()
    await eventually(lambda: pool.stats().idle >= 1)
    async with pool.lease() as lease:
        killed_id = lease.box.id
        os.kill(vmm_pid(lease), signal.SIGKILL)
    async with pool.lease() as lease:
        assert lease.box.id not in {marked_id, raised_id, killed_id}
        assert (await lease.box.run("true")).exit_code == 0
    assert pool.stats().broken == 3


async def test_max_lifetime_retires_idle_boxes(make_pool: Callable[..., BoxPool]) -> None:
    pool = make_pool(min_idle=1, max_size=2, max_uses=100, max_lifetime=3.0)
    await pool.start()
    async with pool.lease() as lease:
        old_id, old_pid = lease.box.id, vmm_pid(lease)
    # Idle, it reaches max_lifetime: it is stopped and a replacement boots in the background.
    await eventually(lambda: not pid_alive(old_pid), timeout=30)
    # The count follows once the old box's stop has completed, after its VM died.
    await eventually(lambda: pool.stats().destroyed >= 1 and pool.stats().idle == 1, timeout=30)
    async with pool.lease() as lease:
        assert lease.box.id != old_id


async def test_stats_count_leases(make_pool: Callable[..., BoxPool]) -> None:
    pool = make_pool(min_idle=0, max_size=2, max_uses=10)
    assert pool.stats() == boxlite.pool.PoolStats(0, 0, 0, 0, 0, 0, 0, 0)
    async with pool.lease(), pool.lease():
        stats = pool.stats()
        assert (stats.leased, stats.created, stats.leases, stats.idle) == (2, 2, 2, 0)
    stats = pool.stats()
    assert (stats.leased, stats.idle, stats.leases, stats.destroyed) == (0, 2, 2, 0)


async def test_close_stops_every_box(make_pool: Callable[..., BoxPool], runtime: boxlite.Boxlite) -> None:
    others = await running_box_ids(runtime)
    pool = make_pool(min_idle=2, max_size=3)
    await pool.start()
    lease = await pool.acquire()
    await eventually(lambda: pool.stats().created == 3 and pool.stats().starting == 0, timeout=240)
    # The leased box and the two idle ones (one booted to refill min_idle).
    pids = [i.vmm_pid for i in await runtime.list_info() if i.status == "running" and i.id not in others]
    assert len(pids) == 3 and vmm_pid(lease) in pids
    await pool.close()
    assert pool.closed
    assert [pid for pid in pids if pid is not None and pid_alive(pid)] == []
    stats = pool.stats()
    assert (stats.idle, stats.leased, stats.starting) == (0, 0, 0)
    assert stats.destroyed == stats.created == 3
    with pytest.raises(boxlite.PoolClosedError):
        await pool.acquire()
    await pool.release(lease)  # releasing after close is harmless
    await pool.close()  # so is closing twice


async def test_creation_errors_reach_acquirers(make_pool: Callable[..., BoxPool], tmp_path: Path) -> None:
    pool = make_pool(options=boxlite.BoxOptions(rootfs_path=str(tmp_path / "missing"), memory_mib=256))
    started = time.monotonic()
    with pytest.raises(boxlite.ImageError):
        await pool.acquire()
    with pytest.raises(boxlite.ImageError):
        await pool.start()
    assert time.monotonic() - started < 20
    assert pool.stats().created == 0


async def test_prepare_resource_and_failing_prepare(make_pool: Callable[..., BoxPool]) -> None:
    async def prepare(box: boxlite.Box) -> str:
        await box.run("sh", ["-c", "echo ready > /root/prepared"])
        return f"resource-of-{box.id}"

    pool = make_pool(min_idle=1, max_size=1, prepare=prepare)
    async with pool.lease() as lease:
        assert lease.resource == f"resource-of-{lease.box.id}"
        assert (await lease.box.run("cat", ["/root/prepared"])).stdout == "ready\n"

    async def failing(box: boxlite.Box) -> None:
        raise ValueError("prepare exploded")

    bad = make_pool(min_idle=1, max_size=1, prepare=failing)
    with pytest.raises(ValueError, match="prepare exploded"):
        await bad.acquire()
    await eventually(lambda: bad.stats().destroyed == 1)
    assert bad.stats().broken == 1 and bad.stats().idle == 0


def test_invalid_pool_options(box_options: boxlite.BoxOptions) -> None:
    with pytest.raises(boxlite.InvalidOptionError, match="name"):
        BoxPool(box_options.model_copy(update={"name": "x"}))
    with pytest.raises(boxlite.InvalidOptionError, match="min_idle"):
        BoxPool(box_options, min_idle=5, max_size=2)
    with pytest.raises(boxlite.InvalidOptionError, match="exhaustion"):
        BoxPool(box_options, exhaustion="queue")  # type: ignore[arg-type]


def test_sync_use_from_a_thread(runtime: boxlite.Boxlite, box_options: boxlite.BoxOptions) -> None:
    outcome: dict[str, object] = {}

    def work() -> None:
        pool = BoxPool(box_options, runtime=runtime, min_idle=1, max_size=1)
        try:
            with pool.lease_sync() as lease:
                outcome["out"] = SyncBox(lease.box).run("echo", ["sync"]).stdout
            outcome["leases"] = pool.stats().leases
        finally:
            pool.close_sync()
        outcome["closed"] = pool.stats().idle == 0

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(120)
    assert outcome == {"out": "sync\n", "leases": 1, "closed": True}


async def test_sync_use_inside_a_running_loop(make_pool: Callable[..., BoxPool]) -> None:
    pool = make_pool(min_idle=1, max_size=1)
    with pool.lease_sync() as lease:
        assert SyncBox(lease.box).run("echo", ["in-loop"]).stdout == "in-loop\n"
    # The same pool, now from async code.
    async with pool.lease() as lease:
        assert (await lease.box.run("echo", ["async"])).stdout == "async\n"


def test_interpreter_exit_with_an_open_pool(busybox: str, tmp_path: Path) -> None:
    """A script that leaves a pool open (a lease held, boxes idle) exits cleanly, no VM left."""
    script = f"""
import asyncio, boxlite
from boxlite.pool import BoxPool
rt = boxlite.Boxlite(boxlite.Options(home_dir={str(tmp_path)!r}))
pool = BoxPool(boxlite.BoxOptions(rootfs_path={busybox!r}, memory_mib=256), runtime=rt, min_idle=2, max_size=3)

async def main():
    await pool.start()
    lease = await pool.acquire()
    while pool.stats().idle < 2:  # the replacement of the leased box
        await asyncio.sleep(0.1)
    infos = await rt.list_info()
    print(" ".join(str(i.vmm_pid) for i in infos if i.vmm_pid), flush=True)

asyncio.run(main())
"""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 3
    assert not any(pid_alive(p) for p in pids)
    assert time.monotonic() - started < 60


async def test_a_cancelled_acquire_strands_nothing(make_pool: Callable[..., BoxPool]) -> None:
    """An acquire abandoned while its box boots leaves that box idle for the next caller."""
    pool = make_pool(min_idle=0, max_size=1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(pool.acquire(), 0.05)
    await eventually(lambda: pool.stats().idle == 1)
    stats = pool.stats()
    assert (stats.leased, stats.waiting, stats.leases, stats.created) == (0, 0, 0, 1)
    async with pool.lease() as lease:
        assert (await lease.box.run("echo", ["ok"])).stdout == "ok\n"


async def test_a_box_that_did_not_boot_is_retried_once(make_pool: Callable[..., BoxPool]) -> None:
    """A boot failure (BoxStartError) may be a one-off: the acquirer gets one more boot. The
    failure is injected through ``prepare``; every box here is a real one."""
    calls = 0

    async def flaky(box: boxlite.Box) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise boxlite.BoxStartError("simulated boot failure")

    pool = make_pool(min_idle=0, max_size=1, prepare=flaky)
    async with pool.lease() as lease:
        assert (await lease.box.run("true")).exit_code == 0
    assert calls == 2 and pool.stats().broken >= 1

    async def always_fails(box: boxlite.Box) -> None:
        nonlocal calls
        calls += 1
        raise boxlite.BoxStartError("simulated boot failure")

    calls = 0
    failing = make_pool(min_idle=0, max_size=1, prepare=always_fails)
    with pytest.raises(boxlite.BoxStartError, match="simulated"):
        await failing.acquire()
    assert calls == 2


async def test_max_size_bounds_the_running_vms(box_options: boxlite.BoxOptions, tmp_path: Path) -> None:
    """Five concurrent tenants on max_size=2 with fresh boxes: never more than 2 VMs at once."""
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path)))
    pool = BoxPool(box_options, runtime=runtime, min_idle=1, max_size=2, acquire_timeout=120)
    peak = 0
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, len(vmms_under(tmp_path)))
            await asyncio.sleep(0.02)

    async def tenant(n: int) -> str:
        async with pool.lease() as lease:
            return (await lease.box.run("sh", ["-c", f"sleep 0.3; echo {n}"])).stdout

    sampler = asyncio.ensure_future(sample())
    try:
        outputs = await asyncio.gather(*(tenant(n) for n in range(5)))
    finally:
        done = True
        await sampler
        await pool.close()
    assert outputs == [f"{n}\n" for n in range(5)]
    assert 1 <= peak <= 2
    assert pool.stats().leases == 5
    assert vmms_under(tmp_path) == []


def test_interpreter_exit_while_a_pool_box_boots(busybox: str, tmp_path: Path) -> None:
    """Exit right after a lease, while its replacement is booting: no VM outlives the script."""
    script = f"""
import boxlite
from boxlite.pool import BoxPool
rt = boxlite.Boxlite(boxlite.Options(home_dir={str(tmp_path)!r}))
pool = BoxPool(boxlite.BoxOptions(rootfs_path={busybox!r}, memory_mib=256), runtime=rt, min_idle=1, max_size=2)
lease = pool.acquire_sync()
print(pool.stats().starting, flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "1"  # the replacement was booting at exit
    assert vmms_under(tmp_path) == []
