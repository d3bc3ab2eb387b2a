"""Pools refilled from a snapshot against pools that boot, side by side in one run.

    BOXLITE_ACCEL=tcg uv run python benchmarks/bench_snapshot_pool.py [--runs 20] [--calls 100]

Measures, in the same run (issue 12, item 5):
  * ``BoxPool(max_uses=1)`` on the busybox image, back-to-back leases running ``true`` (no think
    time: bounded by how fast replacements come): booting vs ``from_snapshot=True``;
  * a warm interpreter in a new box, both ways the pool could get one from a snapshot: restore a
    snapshot taken before the interpreter started and start it (a), or restore one taken with the
    interpreter running and attach to it (b, what ``create_tool_pool`` does);
  * ``create_tool_pool(max_uses=1)``, back-to-back ``run_python("print(1)")`` through a
    ``ToolSandbox`` (each call a new box): booting vs from a snapshot;
  * the pooled tool call ``print(1)`` (lease + call + release of a reused warm box) on a pool
    filled from a snapshot: p50 target under 20 ms.
Prints p50/p95 in milliseconds; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import boxlite
from boxlite.pool import BoxPool
from boxlite.tools import BoxSandbox, ToolSandbox, create_tool_pool

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
from build_images import build_images  # noqa: E402


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def report(label: str, samples: list[float]) -> None:
    print(f"  {label:<58} p50 {pct(samples, 50):8.1f} ms   p95 {pct(samples, 95):8.1f} ms")


async def timed(runs: int, step: Callable[[], Awaitable[object]]) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await step()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def back_to_back_true(runtime: boxlite.Boxlite, layout: str, runs: int, from_snapshot: bool) -> list[float]:
    options = boxlite.BoxOptions(rootfs_path=layout, memory_mib=256)
    pool = BoxPool(options, runtime=runtime, min_idle=2, max_size=4, max_uses=1, from_snapshot=from_snapshot)

    async def lease_true() -> None:
        async with pool.lease() as lease:
            result = await lease.box.run("true")
            assert result.exit_code == 0, result

    try:
        await pool.start()
        return await timed(runs, lease_true)
    finally:
        await pool.close()


async def interpreter_ways(runtime: boxlite.Boxlite, image: str, runs: int) -> None:
    """(a) restore + start an interpreter, (b) restore + attach to the one running. One
    snapshot for both (the interpreter's files in its page cache either way): (a) starts a
    second interpreter beside the one (b) attaches to. Prints the total and its parts."""
    options = boxlite.BoxOptions(rootfs_path=image, memory_mib=512)
    template = await runtime.create(options)
    session_dir = await BoxSandbox(template).start_for_snapshot()
    await template.snapshot("bench-with-interpreter")
    await template.stop()

    async def ready(label: str, make_ready: Callable[[boxlite.Box], Awaitable[BoxSandbox]]) -> None:
        parts: dict[str, list[float]] = {"total": [], "restore": [], "interpreter": [], "first call": []}
        for _ in range(runs):
            t0 = time.perf_counter()
            box = await runtime.restore("bench-with-interpreter")
            t1 = time.perf_counter()
            sandbox = await make_ready(box)
            t2 = time.perf_counter()
            assert (await sandbox.run_python("print(1)")).stdout == "1\n"
            t3 = time.perf_counter()
            for name, ms in zip(parts, (t3 - t0, t1 - t0, t2 - t1, t3 - t2), strict=True):
                parts[name].append(ms * 1000)
            await box.stop()
        report(label, parts.pop("total"))
        print("      " + ", ".join(f"{name} p50 {pct(samples, 50):.0f} ms" for name, samples in parts.items()))

    try:
        await ready("(a) restore, start the interpreter", lambda box: BoxSandbox(box).start())
        await ready(
            "(b) restore, attach to the interpreter in the snapshot", lambda box: BoxSandbox(box).attach(session_dir)
        )
    finally:
        runtime.snapshots.remove("bench-with-interpreter")


async def tool_pool_back_to_back(runtime: boxlite.Boxlite, image: str, runs: int, from_snapshot: bool) -> list[float]:
    pool = create_tool_pool(
        image, runtime=runtime, memory_mib=512, min_idle=2, max_size=4, max_uses=1, from_snapshot=from_snapshot
    )
    sandbox = ToolSandbox(pool=pool)

    async def call() -> None:
        assert (await sandbox.run_python("print(1)")).stdout == "1\n"

    try:
        await pool.start()
        return await timed(runs, call)
    finally:
        await pool.close()


async def pooled_call(runtime: boxlite.Boxlite, image: str, calls: int) -> list[float]:
    pool = create_tool_pool(image, runtime=runtime, memory_mib=512, min_idle=1, max_size=1, max_uses=1_000_000)
    sandbox = ToolSandbox(pool=pool)

    async def call() -> None:
        assert (await sandbox.run_python("print(1)")).stdout == "1\n"

    try:
        await pool.start()
        await call()  # the first call after the restore warms the emulator's code cache
        return await timed(calls, call)
    finally:
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    images = build_images()
    busybox, python = str(images["busybox"]), str(images["python"])
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-snapshot-pool-") as home:
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
        accel = (await runtime.accelerator())["accel"]
        print(f"pools that boot vs pools restored from a snapshot ({args.runs} runs each, accel={accel})")
        print("max_uses=1 BoxPool (busybox, min_idle=2), back-to-back leases running `true`:")
        report("booting", await back_to_back_true(runtime, busybox, args.runs, False))
        report("from a snapshot", await back_to_back_true(runtime, busybox, args.runs, True))
        print("a new box with a warm interpreter, restore to the first print(1) result (python image):")
        await interpreter_ways(runtime, python, max(3, args.runs // 2))
        print("max_uses=1 tool pool (python image, min_idle=2), back-to-back run_python('print(1)'):")
        report("booting + starting the interpreter", await tool_pool_back_to_back(runtime, python, args.runs, False))
        report("from a snapshot + attaching", await tool_pool_back_to_back(runtime, python, args.runs, True))
        print(f"pooled tool call on a box restored from a snapshot ({args.calls} calls; target < 20 ms p50):")
        report("lease + run_python('print(1)') + release", await pooled_call(runtime, python, args.calls))
        await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
