"""Snapshot benchmarks: restore to first exec result against cold boot to first exec result,
side by side in one run, and what taking a snapshot costs (time, size on disk).

    BOXLITE_ACCEL=tcg uv run python benchmarks/bench_snapshot.py [--rounds 5] [--memory-mib 512]

Prints figures measured in one run; asserts nothing. "Cold boot" is `runtime.create()` of a
busybox box until `run("true")` returns; "restore" is `runtime.restore()` of a snapshot of
such a box (booted, one `true` run) until `run("true")` returns in the restored box. The
restore includes checking the state file's checksum and the versions it was taken with. Cold
boots have the boot cache off (``BOXLITE_BOOT_CACHE=0``); a third line is `create()` of the
same shape with it on (restored from the cached post-boot snapshot).
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


def line(label: str, value: str) -> None:
    print(f"  {label:<46} {value}")


def ms(samples: list[float]) -> str:
    return f"p50 {statistics.median(samples):.0f} ms, min {min(samples):.0f} ms, max {max(samples):.0f} ms"


async def first_result(runtime: boxlite.Boxlite, options: boxlite.BoxOptions, boot_cache: bool = True) -> float:
    """Milliseconds from create() to the first `true`'s result; the box is stopped after.
    Without ``boot_cache`` the box boots even when its shape was booted before."""
    os.environ["BOXLITE_BOOT_CACHE"] = "1" if boot_cache else "0"
    started = time.perf_counter()
    box = await runtime.create(options)
    await box.run("true")
    elapsed = (time.perf_counter() - started) * 1000
    await box.stop()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-mib", type=int, default=512)
    args = parser.parse_args()
    images = build_images(["busybox"])
    shape = boxlite.BoxOptions(rootfs_path=str(images["busybox"]), memory_mib=args.memory_mib)
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-") as home:
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
        accel = await runtime.accelerator()
        print(f"host: {os.cpu_count()} CPUs, accelerator {accel['accel']} ({accel['reason']})")

        source = await runtime.create(shape)
        await source.run("true")
        takes: list[float] = []
        paused: list[float] = []
        sizes: list[int] = []
        for i in range(args.rounds):
            started = time.perf_counter()
            info = await source.snapshot(f"bench-{i}")
            takes.append((time.perf_counter() - started) * 1000)
            paused.append(info.took_ms)
            sizes.append(info.size_bytes)
        await source.stop()
        for i in range(1, args.rounds):
            runtime.snapshots.remove(f"bench-{i}")
        memory = runtime.snapshots.get("bench-0").dir / "memory"

        cold: list[float] = []
        restored: list[float] = []
        cached: list[float] = []
        await first_result(runtime, shape)  # the source booted the shape once: now it is cached
        for _ in range(args.rounds):
            # Interleaved, so all see the same machine load.
            cold.append(await first_result(runtime, shape, boot_cache=False))
            restored.append(await first_result(runtime, boxlite.BoxOptions(snapshot="bench-0")))
            cached.append(await first_result(runtime, shape))

        print(f"one {args.memory_mib} MiB busybox box, {args.rounds} rounds")
        line("cold boot to first exec result", ms(cold))
        line("restore to first exec result", ms(restored))
        line("restore / cold boot (p50)", f"{statistics.median(restored) / statistics.median(cold):.2f}")
        line("create() from the boot cache to first result", ms(cached))
        line("snapshot() (saved, then memory moved to its file)", ms(takes))
        line("  of which the box was paused", ms(paused))
        line(
            "snapshot size on disk (allocated)",
            f"{statistics.median(sizes) / 2**20:.1f} MiB"
            f" (memory file {memory.stat().st_size / 2**20:.0f} MiB apparent)",
        )
        print("published figures, for comparison: E2B resume about 1 s; exec-sandbox snapshot restore 50-60 ms")


if __name__ == "__main__":
    asyncio.run(main())
