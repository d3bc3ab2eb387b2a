"""ComputerBox benchmarks on the test image ``desktop`` (Xvfb, icewm, x11vnc + noVNC): cold start
to ``wait_until_ready()`` and where it goes, screenshot latency, click-to-screenshot latency, and
the VMM's memory.

    uv run python benchmarks/bench_computer.py [--rounds 10] [--memory 1024]
    uv run python benchmarks/bench_computer.py --pool [--rounds 2]

Runs under TCG unless ``BOXLITE_ACCEL`` says otherwise (``BOXLITE_ACCEL=kvm`` where the host has
it). Prints figures measured in one run; asserts nothing. The start is split by a probe that
runs in the box from the moment it has booted and notes the guest's uptime when the X server
first answers, when icewm has claimed the display and when noVNC listens; the probe's own polls
(every 0.1 s) cost a little CPU in the box.

``--pool`` measures instead an agent's first computer-use call (a screenshot) on a cold
``ComputerBox`` the tool session starts and on a desktop leased from a warm
``create_computer_pool`` (``min_idle=1``), ``--rounds`` sessions each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("BOXLITE_ACCEL", "tcg")

import boxlite
from boxlite.tools import ComputerToolSession, create_computer_pool

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
from build_images import build_images  # noqa: E402

# Prints the guest's uptime at each stage of the desktop's start.
PROBE = """
up() { cut -d' ' -f1 /proc/uptime; }
echo "agent $(up)"
until xdpyinfo >/dev/null 2>&1; do sleep 0.1; done
echo "x $(up)"
until xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | grep -q 'window id'; do sleep 0.1; done
echo "wm $(up)"
until awk '$4 == "0A" && $2 ~ /:0BB8$/ { f = 1 } END { exit !f }' /proc/net/tcp /proc/net/tcp6; do sleep 0.1; done
echo "web $(up)"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def line(label: str, value: str) -> None:
    print(f"  {label:<52} {value}")


async def timed(rounds: int, step: Callable[[], Awaitable[object]]) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await step()
        times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"median {statistics.median(ms):7.0f} ms   min {ms[0]:7.0f}   max {ms[-1]:7.0f}   (n={len(ms)})"


async def first_call(session: ComputerToolSession) -> float:
    """Seconds from a session's first action (a screenshot) to its result."""
    started = time.perf_counter()
    result = await session.act("screenshot", timeout=600)
    elapsed = time.perf_counter() - started
    assert not result.error, result.text
    await session.close()
    return elapsed


async def pool_figures(runtime: boxlite.Boxlite, image: str, rounds: int, memory: int) -> None:
    cold = [await first_call(ComputerToolSession(runtime=runtime, memory=memory, image=image)) for _ in range(rounds)]
    pool = create_computer_pool(memory=memory, image=image, runtime=runtime, min_idle=1, max_size=2)
    t = time.perf_counter()
    await pool.start()
    filled = time.perf_counter() - t
    warm = []
    for _ in range(rounds):
        while pool.stats().idle < 1:  # the refill of the previous lease
            await asyncio.sleep(0.2)
        warm.append(await first_call(ComputerToolSession(pool=pool)))
    await pool.close()
    print(f"first computer-use call of an agent (screenshot), medians of {rounds} runs")
    line("cold ComputerBox started by the session", f"{statistics.median(cold):7.2f} s")
    line("pool.start() (one ready desktop)", f"{filled:7.2f} s")
    line("leased from a warm pool", f"{statistics.median(warm):7.2f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--memory", type=int, default=1024, help="guest memory in MiB")
    parser.add_argument("--pool", action="store_true", help="first tool call: warm pool vs cold box")
    args = parser.parse_args()
    image = str(build_images(["desktop"])["desktop"])
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-") as home:
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
        accel = await runtime.accelerator()
        print(f"host: {os.cpu_count()} CPUs, accelerator {accel['accel']} ({accel['reason']})")
        first = time.perf_counter()
        first_box = boxlite.ComputerBox(
            memory=args.memory, gui_http_port=free_port(), gui_https_port=free_port(), runtime=runtime, image=image
        )
        await first_box.start()
        await first_box.shutdown()
        first_s = time.perf_counter() - first
        print(f"first box of the image (unpacked into a base disk once per home; boot; stop): {first_s:.1f} s")
        if args.pool:
            await pool_figures(runtime, image, args.rounds, args.memory)
            await runtime.shutdown()
            return
        # Boxes of an image already on disk: what every later start costs.
        desktop = boxlite.ComputerBox(
            cpu=2,
            memory=args.memory,
            gui_http_port=free_port(),
            gui_https_port=free_port(),
            runtime=runtime,
            image=image,
        )
        started = time.perf_counter()
        await desktop.start()
        booted = time.perf_counter() - started
        probe = await desktop.box.exec("sh", ["-c", PROBE])
        await desktop.wait_until_ready(timeout=600)
        ready = time.perf_counter() - started
        stages = dict(line_.split() for line_ in (await probe.wait()).stdout.splitlines())
        print(f"cold start, image on disk (cpu=2, memory={args.memory} MiB, 1024x768):")
        line("ComputerBox.start() (VM boot, desktop launched)", f"{booted:7.2f} s")
        line("start to wait_until_ready() returning", f"{ready:7.2f} s")
        line("  probe started, after start() (guest uptime)", f"{float(stages['agent']):7.2f} s")
        for stage, label in (("x", "X server answers"), ("wm", "icewm has the display"), ("web", "noVNC listens")):
            line(f"  {label} (guest uptime)", f"{float(stages[stage]):7.2f} s")
        for name, value in desktop.box.info().timings.items():
            line(f"  engine start stage: {name}", f"{value:7d} ms")

        print("latency:")
        line("exec round trip (xdotool getmouselocation)", summary(await timed(args.rounds, desktop.cursor_position)))
        line("screenshot() (scrot + base64 + transfer)", summary(await timed(args.rounds, desktop.screenshot)))
        shot = await desktop.screenshot()
        line("  screenshot size", f"{len(shot) / 1024:7.0f} KiB PNG, {len(shot['data']) / 1024:.0f} KiB base64")

        async def click_then_screenshot() -> None:
            await desktop.mouse_move(900, 200)
            await desktop.left_click()
            await desktop.screenshot()

        line("mouse_move + left_click + screenshot()", summary(await timed(args.rounds, click_then_screenshot)))
        line(
            "type('hello world') (12 ms per key in xdotool)",
            summary(await timed(3, lambda: desktop.type("hello world"))),
        )

        metrics = await desktop.metrics()
        print("memory:")
        line("VMM resident set (host)", f"{metrics.vmm_rss / 2**20:7.0f} MiB")
        line("guest memory in use", f"{metrics.mem / 2**20:7.0f} MiB")
        line("memory charged to the desktop's processes (guest)", f"{metrics.mem_used_by_executions / 2**20:7.0f} MiB")
        await desktop.shutdown()
        await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
