"""Output benchmarks: host memory while a box writes gigabytes.

    uv run python benchmarks/bench_output.py [--gib 4]

Prints figures; asserts nothing. Target (issue 9): the host process's RSS grows by under
64 MiB while a box writes 4 GiB to stdout, through each of ``run()`` (the result keeps
``max_output_bytes``, the rest is drained and dropped), ``stdout()`` streaming (held back by
the 1 MiB output window) and a tool call (``ToolSandbox.run_shell``, capped the same way).
RSS is the current resident set (``VmRSS``), sampled every 20 ms, not a high-water mark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import boxlite
from boxlite.tools import ToolSandbox

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
from build_images import build_images  # noqa: E402

MIB = 1024 * 1024


def rss_bytes() -> int:
    for entry in Path("/proc/self/status").read_text().splitlines():
        if entry.startswith("VmRSS:"):
            return int(entry.split()[1]) * 1024
    return 0


def line(label: str, value: str) -> None:
    print(f"  {label:<46} {value}")


async def measure(label: str, size: int, work: Callable[[], Awaitable[int]]) -> None:
    """Runs ``work`` (which returns the bytes it saw) while sampling RSS; prints the growth."""
    base = rss_bytes()
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, rss_bytes() - base)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        seen = await work()
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    rate = size / MIB / seconds
    line(label, f"RSS +{peak / MIB:6.1f} MiB (target < 64)   {rate:6.0f} MiB/s   {seen / MIB:.0f} MiB kept/read")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=4.0, help="GiB the box writes in each case")
    args = parser.parse_args()
    # In 64 KiB blocks: under TCG the box's own copying is the bottleneck, and busybox `head`
    # copies in small ones (about 5x slower).
    blocks = max(1, int(args.gib * 1024 * MIB) // (64 * 1024))
    size = blocks * 64 * 1024
    writer = f"dd if=/dev/zero bs=65536 count={blocks} 2>/dev/null"
    write = ["sh", "-c", writer]
    images = build_images(["busybox"])
    layout = str(images["busybox"])
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-") as home:
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
        accel = await runtime.accelerator()
        print(f"host: {os.cpu_count()} CPUs, accelerator {accel['accel']}")
        print(f"host memory while a box writes {args.gib:g} GiB to stdout")
        box = await runtime.create(boxlite.BoxOptions(rootfs_path=layout, memory_mib=256))
        try:

            async def through_run() -> int:
                result = await box.run(write[0], write[1:])
                assert result.stdout_dropped + len(result.stdout_bytes) == size, result.stdout_dropped
                return len(result.stdout_bytes)

            async def through_stream() -> int:
                execution = await box.exec(write[0], write[1:])
                total = 0
                async for chunk in execution.stdout().chunks():
                    total += len(chunk)
                await execution.wait()
                assert total == size, total
                return total

            await measure("run() (result capped at 4 MiB)", size, through_run)
            await measure("stdout() streaming", size, through_stream)
        finally:
            await box.stop()
        sandbox = ToolSandbox(layout, runtime=runtime, memory_mib=256)
        try:

            async def through_tool() -> int:
                result = await sandbox.run_shell(writer, timeout=3600)
                assert result.stdout_truncated > 0, result
                return len(result.stdout)

            await measure("tool call (ToolSandbox.run_shell)", size, through_tool)
        finally:
            await sandbox.close()
        await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
