"""Timeouts are a contract: when one fires, every process the execution started is dead before
the call returns (a cgroup per execution in the guest), and the result says so."""

from __future__ import annotations

import asyncio

import boxlite
import pytest


async def processes(box: boxlite.Box, pattern: str) -> list[str]:
    """Command lines of the guest's processes that contain ``pattern`` (besides ps itself)."""
    result = await box.run("ps", ["-o", "pid,args"])
    assert result.exit_code == 0, result.stderr
    return [line for line in result.stdout.splitlines()[1:] if pattern in line and "ps -o" not in line]


async def test_sleep_times_out_and_leaves_no_process(shared_box: boxlite.Box) -> None:
    started = asyncio.get_running_loop().time()
    result = await shared_box.run("sh", ["-c", "echo before; exec sleep 9999"], timeout=2)
    elapsed = asyncio.get_running_loop().time() - started
    assert result.timed_out and result.exit_code == 124
    assert result.stdout == "before\n", "output captured before the timeout is kept"
    assert 2 <= elapsed < 10
    assert await processes(shared_box, "sleep 9999") == []


async def until_running(box: boxlite.Box, *patterns: str, within: float = 60) -> None:
    """Waits until a process matching each pattern runs in the box: a kill that fires before
    the processes exist would prove nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        listing = await processes(box, "")
        missing = [p for p in patterns if not any(p in line for line in listing)]
        if not missing:
            return
        assert loop.time() < deadline, f"{missing} never started: {listing}"
        await asyncio.sleep(0.1)


async def test_backgrounded_grandchildren_and_daemons_die_too(shared_box: boxlite.Box) -> None:
    # A grandchild in the background, and a daemon that left the process group with setsid.
    script = "sleep 8881 & setsid sleep 8882 & (setsid sh -c 'sleep 8883' &) ; sleep 8884"
    sleeps = [f"sleep {n}" for n in (8881, 8882, 8883, 8884)]
    run = asyncio.ensure_future(shared_box.run("sh", ["-c", script], timeout=8))
    await until_running(shared_box, *sleeps, within=6)
    assert not run.done(), "the timeout fired before every process ran"
    result = await run
    assert result.timed_out
    for sleep in sleeps:
        assert await processes(shared_box, sleep) == [], sleep


async def test_kill_kills_the_whole_tree(shared_box: boxlite.Box) -> None:
    execution = await shared_box.exec("sh", ["-c", "setsid sleep 7771 & sleep 7772"])
    await until_running(shared_box, "sleep 7771", "sleep 7772")
    await execution.kill()
    result = await execution.wait()
    assert result.exit_code == 137 and not result.timed_out
    assert await processes(shared_box, "sleep 777") == []


async def test_cancelled_wait_kills_the_execution(shared_box: boxlite.Box) -> None:
    """The reference docs' 'zombie' pattern is safe with us: wait_for's cancellation kills."""
    execution = await shared_box.exec("sh", ["-c", "sleep 6661 & sleep 6662"])
    await until_running(shared_box, "sleep 6661", "sleep 6662")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(execution.wait(), timeout=1)
    assert await processes(shared_box, "sleep 666") == []


async def test_timeout_on_simplebox_exec(python_box: boxlite.SimpleBox) -> None:
    result = await python_box.exec(
        "python3", "-c", "import time\nprint('tick', flush=True)\nwhile True: time.sleep(1)", timeout=3
    )
    assert result.timed_out and result.exit_code == 124
    assert result.stdout == "tick\n"
    # The box works normally afterwards.
    assert (await python_box.exec("python3", "-c", "print(6 * 7)")).stdout == "42\n"


async def test_fast_commands_are_not_affected_by_a_timeout(shared_box: boxlite.Box) -> None:
    result = await shared_box.run("echo", ["quick"], timeout=30)
    assert (result.exit_code, result.stdout, result.timed_out) == (0, "quick\n", False)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
async def test_invalid_timeouts_are_refused(shared_box: boxlite.Box, bad: float) -> None:
    with pytest.raises(boxlite.InvalidOptionError, match="timeout"):
        await shared_box.run("true", timeout=bad)
