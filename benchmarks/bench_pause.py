"""Pause and resume benchmarks: latency of `pause()` and `resume()`, and what an idle VMM costs
in host CPU while paused against while running.

    uv run python benchmarks/bench_pause.py [--cycles 20] [--cpu-seconds 5]

Prints figures measured in one run; asserts nothing. `pause()` and `resume()` are one QMP
command each on the box's control socket (the first call also connects it); the CPU figures
are the VMM process's user+system time (from /proc) over a window of `--cpu-seconds`, as a
percentage of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boxlite

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
from build_images import build_images  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system time of process `pid` so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def cpu_share(pid: int, window: float) -> float:
    """The percentage of one core `pid` used over the next `window` seconds."""
    before, started = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(window)
    return 100 * (cpu_seconds(pid) - before) / (time.perf_counter() - started)


def line(label: str, value: str) -> None:
    print(f"  {label:<46} {value}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--cpu-seconds", type=float, default=5.0)
    args = parser.parse_args()
    images = build_images(["busybox"])
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-") as home:
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
        accel = await runtime.accelerator()
        print(f"host: {os.cpu_count()} CPUs, accelerator {accel['accel']} ({accel['reason']})")
        box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(images["busybox"]), memory_mib=512))
        pid = box.info().vmm_pid
        assert pid is not None
        await box.run("true")
        pauses: list[float] = []
        resumes: list[float] = []
        for _ in range(args.cycles):
            t = time.perf_counter()
            await box.pause()
            pauses.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await box.resume()
            resumes.append((time.perf_counter() - t) * 1000)
        print(f"pause and resume ({args.cycles} cycles, one 512 MiB box)")
        line("pause() p50 / max", f"{statistics.median(pauses):.2f} ms / {max(pauses):.2f} ms")
        line("resume() p50 / max", f"{statistics.median(resumes):.2f} ms / {max(resumes):.2f} ms")
        t = time.perf_counter()
        await box.run("true")
        line("first exec result after resume", f"{(time.perf_counter() - t) * 1000:.1f} ms")

        print(f"idle VMM CPU ({args.cpu_seconds:g} s windows, % of one core)")
        running = await cpu_share(pid, args.cpu_seconds)
        await box.pause()
        paused = await cpu_share(pid, args.cpu_seconds)
        await box.resume()
        line("running, idle guest", f"{running:.2f} %")
        line("paused", f"{paused:.2f} %")
        await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
