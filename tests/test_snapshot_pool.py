"""Pools that refill from a snapshot (``BoxPool(from_snapshot=True)``, the default of
``create_tool_pool``), on real VMs: every lease is a restored box nobody used, with its own id;
the warm interpreter started before the snapshot answers in every restored box, and a call's
timeout still kills everything the call started; restored interpreters do not share random
state; ``close()`` removes the pool's snapshot and leaves no VM running. Also a plain pool's
hooks, the removal of snapshots of pools whose process died, the settings a snapshot pool
refuses, and the interpreter's reseeding of PRNGs in children forked ahead of time (run on the
host: that program is the one that runs in the box)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import boxlite
import pytest
from boxlite.pool import SNAPSHOT_PREFIX, BoxPool
from boxlite.tools import BoxSandbox, ToolSandbox, create_tool_pool
from boxlite.tools._session import interpreter_source
from conftest import SPAWN_AND_SPIN, vmms_under

RANDOMNESS = "import random, uuid, os; print(random.random(), uuid.uuid4(), os.urandom(8).hex())"


async def processes_matching(box: boxlite.Box, needle: str) -> list[str]:
    """Command lines of the box's processes that contain ``needle`` (no ps in minbase: /proc)."""
    script = "for p in /proc/[0-9]*; do tr '\\0\\n' '  ' < $p/cmdline 2>/dev/null; echo; done"
    listing = await box.run("sh", ["-c", script])
    return [line for line in listing.stdout.splitlines() if needle in line and "/proc/" not in line]


def pool_snapshots(runtime: boxlite.Boxlite) -> list[str]:
    return [s.name for s in runtime.snapshots.list() if s.name.startswith(SNAPSHOT_PREFIX)]


@pytest.fixture(scope="module")
def vmms_before(home: Path) -> set[int]:
    """The VMMs running before the module's pool started."""
    return set(vmms_under(home))


@pytest.fixture(scope="module")
async def pool(runtime: boxlite.Boxlite, python_image: str, vmms_before: set[int]) -> AsyncIterator[BoxPool]:
    """A tool pool of fresh boxes (max_uses=1) refilled from a snapshot; a test closes it."""
    pool = create_tool_pool(python_image, runtime=runtime, memory_mib=512, min_idle=1, max_size=2, max_uses=1)
    assert pool.from_snapshot  # the default for tool pools
    await pool.start()
    yield pool
    await pool.close()


async def test_every_lease_is_a_restored_box_nobody_used(runtime: boxlite.Boxlite, pool: BoxPool) -> None:
    assert pool.snapshot is not None and pool.snapshot in pool_snapshots(runtime)
    seen = []
    for _ in range(3):
        async with pool.lease() as lease:
            seen.append(lease.box.id)
            marker = await lease.box.run("sh", ["-c", "ls /root/used 2>/dev/null; echo used > /root/used"])
            assert marker.exit_code == 0 and marker.stdout == "", "a lease got a box another lease had used"
            # The warm interpreter started before the snapshot answers in the restored box.
            assert isinstance(lease.resource, BoxSandbox)
            result = await lease.resource.run_python("import os; print(os.path.exists('/root/used'), 6 * 7)")
            assert result.stdout == "True 42\n", result
    assert len(set(seen)) == 3, seen
    assert pool.stats().created >= 3


async def test_restored_interpreters_do_not_share_randomness(pool: BoxPool) -> None:
    async with pool.lease() as one, pool.lease() as two:
        assert one.box.id != two.box.id
        first = (await one.resource.run_python(RANDOMNESS)).stdout.split()
        second = (await two.resource.run_python(RANDOMNESS)).stdout.split()
    assert len(first) == len(second) == 3, (first, second)
    for mine, theirs in zip(first, second, strict=True):
        assert mine != theirs, (first, second)


async def test_tools_run_on_the_restored_warm_interpreter_and_a_timeout_kills_everything(pool: BoxPool) -> None:
    sandbox = ToolSandbox(pool=pool)
    assert (await sandbox.run_python("print(1)")).stdout == "1\n"
    async with pool.lease() as lease:
        timed_out = await lease.resource.run_python(SPAWN_AND_SPIN.format(n=4321), timeout=3)
        assert timed_out.timed_out and timed_out.stdout == "spawned\n", timed_out
        # The interpreter ran under the restored box's bridge execution, so the timeout's kill
        # took it, the code and the daemon the code started in its own session.
        assert await processes_matching(lease.box, "sleep 4321") == []
        assert await processes_matching(lease.box, "python3") == []
        assert not lease.resource.interpreter_running
        lease.mark_broken()


async def test_close_removes_the_snapshot_and_every_vm(
    runtime: boxlite.Boxlite, pool: BoxPool, home: Path, vmms_before: set[int]
) -> None:
    name = pool.snapshot
    assert name is not None
    await pool.close()
    assert pool.snapshot is None
    assert name not in pool_snapshots(runtime)
    assert set(vmms_under(home)) <= vmms_before


async def test_a_plain_box_pool_from_a_snapshot_runs_before_snapshot_once_and_prepare_per_box(
    runtime: boxlite.Boxlite, busybox: str, shared_box: boxlite.Box
) -> None:
    # The snapshot of a pool whose process died (no such pid): the next pool's snapshot removes it.
    orphan = await shared_box.snapshot(f"{SNAPSHOT_PREFIX}999999999-0123456789ab")
    template_ids: list[str] = []
    prepared: list[str] = []

    async def before_snapshot(box: boxlite.Box) -> None:
        template_ids.append(box.id)
        assert (await box.run("sh", ["-c", "echo template > /root/made-before"])).exit_code == 0

    async def prepare(box: boxlite.Box) -> str:
        prepared.append(box.id)
        return (await box.run("cat", ["/root/made-before"])).stdout.strip()

    options = boxlite.BoxOptions(rootfs_path=busybox, memory_mib=256, network_enabled=False)
    pool = BoxPool(
        options,
        runtime=runtime,
        min_idle=0,
        max_size=1,
        from_snapshot=True,
        before_snapshot=before_snapshot,
        prepare=prepare,
    )
    try:
        leased = []
        for _ in range(2):
            async with pool.lease() as lease:
                assert lease.resource == "template"
                leased.append(lease.box.id)
    finally:
        await pool.close()
    # The snapshotted box served the first lease; the second got a box restored from it.
    assert template_ids == leased[:1] and prepared == leased and len(set(leased)) == 2
    assert orphan.name not in pool_snapshots(runtime)


def test_settings_a_snapshot_pool_refuses(tmp_path: Path) -> None:
    with pytest.raises(boxlite.InvalidOptionError, match=r"volumes.*leave from_snapshot unset"):
        BoxPool(boxlite.BoxOptions(image="x", volumes=[(str(tmp_path), "/data")]), from_snapshot=True)
    with pytest.raises(boxlite.InvalidOptionError, match="before_snapshot needs from_snapshot=True"):
        BoxPool(boxlite.BoxOptions(image="x"), from_snapshot=False, before_snapshot=lambda box: asyncio.sleep(0))
    with pytest.raises(boxlite.InvalidOptionError, match=r"takes its own snapshot.*unset options\.snapshot"):
        BoxPool(boxlite.BoxOptions(snapshot="mine"), from_snapshot=True)
    # By default pools refill from a snapshot, and boot where they cannot.
    volumes = boxlite.BoxOptions(image="x", volumes=[(str(tmp_path), "/data")])
    assert BoxPool(boxlite.BoxOptions(image="x")).from_snapshot
    assert not BoxPool(volumes).from_snapshot
    assert not BoxPool(boxlite.BoxOptions(snapshot="mine")).from_snapshot
    assert not create_tool_pool(options=volumes).from_snapshot


def test_children_forked_ahead_of_time_reseed_random(tmp_path: Path) -> None:
    """Children that start with the same ``random`` state draw different numbers.

    In boxes restored from one snapshot, the children forked ahead of time are one child
    copied: the same pid and PRNG state (``random`` reseeds itself at fork, but that fork was
    before the snapshot). Here every child the server forks is given one fixed seed right after
    the fork, which is that situation without a VM."""
    program = tmp_path / "interpreter.py"
    program.write_text(interpreter_source())
    session = tmp_path / "session"
    launcher = (
        "import os, random, runpy\n"
        "os.register_at_fork(after_in_child=lambda: random.seed(1234))\n"
        f"runpy.run_path({str(program)!r}, run_name='__main__')"
    )
    args = [str(session), "fresh", str(tmp_path / "out"), "4000", "1", "1000", "1000"]
    server = subprocess.Popen(
        [sys.executable, "-c", launcher, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        assert server.stdout.readline() == b"READY\n"
        drawn = []
        for _ in range(2):
            code = b"import random; print(random.random())"
            nonce = secrets.token_hex(8).encode()
            server.stdin.write(b"RUN %s %d\n" % (nonce, len(code)) + code)
            server.stdin.flush()
            header = server.stdout.readline().split()
            assert header[:2] == [b"DONE", nonce]
            answer = server.stdout.read(int(header[2]))
            drawn.append(answer)
        assert drawn[0] != drawn[1]
    finally:
        server.kill()
        server.wait()
