"""Pool benchmark: a leased pre-warmed box against a cold box start, to a `true` result.

    uv run python benchmarks/bench_pool.py [--runs 20] [--think 1.5] [--image PATH]

Measures, in the same run:
  * cold: ``SimpleBox`` start + ``exec("true")`` (the shutdown happens after the clock stops);
  * pool, max_uses=1 (a fresh box per lease, the default): ``pool.lease()`` + ``run("true")``
    with ``--think`` seconds between leases, as an agent that thinks between tool calls; the
    background replacement boots during that time;
  * pool, max_uses=1 back to back (no think time): bounded by how fast replacements boot;
  * pool, max_uses=100 (reuse): lease + exec + release of the same warm box.
Prints p50/p95 in milliseconds and the cold/pool ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import boxlite
from boxlite.pool import BoxPool

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
from build_images import build_images  # noqa: E402


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def report(label: str, samples: list[float], baseline: list[float] | None = None) -> None:
    p50, p95 = pct(samples, 50), pct(samples, 95)
    ratio = f"   cold/pool p50 {pct(baseline, 50) / p50:6.1f}x" if baseline else ""
    print(f"  {label:<40} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms{ratio}")


async def cold(runtime: boxlite.Boxlite, options: boxlite.BoxOptions, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        box = boxlite.SimpleBox(rootfs_path=options.rootfs_path, memory_mib=options.memory_mib, runtime=runtime)
        await box.start()
        result = await box.exec("true")
        samples.append((time.perf_counter() - started) * 1000)
        assert result.exit_code == 0, result
        await box.shutdown()
    return samples


async def pooled(
    runtime: boxlite.Boxlite, options: boxlite.BoxOptions, runs: int, think: float, max_uses: int
) -> tuple[list[float], boxlite.pool.PoolStats]:
    pool = BoxPool(options, runtime=runtime, min_idle=2, max_size=4, max_uses=max_uses)
    try:
        await pool.start()
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            async with pool.lease() as lease:
                result = await lease.box.run("true")
            samples.append((time.perf_counter() - started) * 1000)
            assert result.exit_code == 0, result
            await asyncio.sleep(think)
        return samples, pool.stats()
    finally:
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--think", type=float, default=1.5, help="seconds between leases")
    parser.add_argument("--image", help="OCI layout (default: the busybox test image)")
    args = parser.parse_args()
    layout = args.image or str(build_images()["busybox"])
    options = boxlite.BoxOptions(rootfs_path=layout, memory_mib=256)
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-pool-") as home:
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
        accel = (await runtime.accelerator())["accel"]
        print(f"pool lease + `true` vs cold start + `true` ({args.runs} runs each, accel={accel}, image={layout})")
        baseline = await cold(runtime, options, args.runs)
        report("cold SimpleBox start + exec", baseline)
        samples, stats = await pooled(runtime, options, args.runs, args.think, max_uses=1)
        report(f"pool max_uses=1, {args.think}s between leases", samples, baseline)
        samples, stats_b2b = await pooled(runtime, options, args.runs, 0.0, max_uses=1)
        report("pool max_uses=1, back to back", samples, baseline)
        samples, _ = await pooled(runtime, options, args.runs, 0.0, max_uses=100)
        report("pool max_uses=100 (reuse)", samples, baseline)
        print(f"  stats (think time): {stats}")
        print(f"  stats (back to back): {stats_b2b}")
        await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
