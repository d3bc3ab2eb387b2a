"""Engine benchmarks: start-up against bare boot, exec round trip, boot reliability.

    uv run python benchmarks/bench_engine.py [--starts 10] [--execs 200] [--boots 200]
        [--load-execs 50] [--idle-boxes 16]

Prints figures and ratios against baselines measured in the same run; asserts nothing.
Targets (DESIGN.md): create() to first exec result within 1.25x of the bare boot of the same
kernel and initramfs; exec round trip of `true` within 1.2x of the guest's own spawn-and-wait of
/bin/true (p50); 200 consecutive boots with zero hangs; VMM RSS of an idle 512 MiB box under
64 MiB, and 16 idle boxes at once, all answering; the RSS of a booted box after its guest used
and freed 200 MiB, with free page reporting and without. Also: the exec round trip under a load of 8
concurrent executions, and the time from an execution's timeout to its result, with every
process it started dead.
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

GUEST_SPAWN_LOOP = """
import subprocess, time
for _ in range({n}):
    t = time.perf_counter()
    subprocess.run(["/bin/true"])
    print((time.perf_counter() - t) * 1000)
"""


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def line(label: str, value: str) -> None:
    print(f"  {label:<46} {value}")


async def create_to_first_result(runtime: boxlite.Boxlite, layout: str) -> float:
    """Milliseconds from create() of a 512 MiB box to its first `true`'s result."""
    t = time.perf_counter()
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=layout, memory_mib=512))
    result = await (await box.exec("true")).wait()
    elapsed = (time.perf_counter() - t) * 1000
    assert result.exit_code == 0
    await box.stop()
    return elapsed


async def bench_start(runtime: boxlite.Boxlite, layout: str, starts: int) -> None:
    print(f"start-up ({starts} runs each, medians)")
    bare = [await runtime.bare_boot_ms() for _ in range(starts)]
    # The boot cache's entry for this shape: the second boot of a shape is snapshotted.
    for _ in range(2):
        await create_to_first_result(runtime, layout)
    create, cached = [], []
    for _ in range(starts):
        # Interleaved, so both see the same machine load.
        os.environ["BOXLITE_BOOT_CACHE"] = "0"
        create.append(await create_to_first_result(runtime, layout))
        del os.environ["BOXLITE_BOOT_CACHE"]
        cached.append(await create_to_first_result(runtime, layout))
    b, c, r = statistics.median(bare), statistics.median(create), statistics.median(cached)
    line("bare boot: launch to agent hello", f"{b:8.1f} ms  (min {min(bare):.1f}, max {max(bare):.1f})")
    line("create() booting, to first exec result", f"{c:8.1f} ms  (min {min(create):.1f}, max {max(create):.1f})")
    line("ratio (target <= 1.25)", f"{c / b:8.2f}x")
    line("create() from the boot cache", f"{r:8.1f} ms  (min {min(cached):.1f}, max {max(cached):.1f})")
    line("boot cache / booting", f"{r / c:8.2f}x")


async def bench_exec(runtime: boxlite.Boxlite, layout: str, execs: int) -> None:
    rounds = 10
    print(f"exec round trip of `true` ({execs} runs, in {rounds} rounds alternating with the guest's own)")
    async with boxlite.SimpleBox(rootfs_path=layout, memory_mib=512, runtime=runtime) as box:
        for _ in range(10):  # warm-up
            await box.exec("true")
        samples: list[float] = []
        guest_samples: list[float] = []
        # Host and guest figures alternate, so that a slow spell of the machine (emulation
        # is sensitive to it) weighs on both alike.
        for _ in range(rounds):
            for _ in range(execs // rounds):
                t = time.perf_counter()
                await box.exec("/bin/true")
                samples.append((time.perf_counter() - t) * 1000)
            guest = await box.exec("python3", "-c", GUEST_SPAWN_LOOP.format(n=execs // rounds))
            guest_samples.extend(float(x) for x in guest.stdout.split())
    p50, p95 = statistics.median(samples), pct(samples, 95)
    guest_p50, guest_p95 = statistics.median(guest_samples), pct(guest_samples, 95)
    line("host exec() of /bin/true, p50 / p95", f"{p50:8.2f} / {p95:.2f} ms")
    line("guest's own spawn+wait of /bin/true, p50 / p95", f"{guest_p50:8.2f} / {guest_p95:.2f} ms")
    line("ratio p50 (target <= 1.2)", f"{p50 / guest_p50:8.2f}x")


async def bench_exec_under_load(runtime: boxlite.Boxlite, layout: str, execs: int) -> None:
    print(f"exec round trip of `true` under load: 8 concurrent executions, {execs} runs each")
    async with boxlite.SimpleBox(rootfs_path=layout, memory_mib=512, runtime=runtime) as box:
        samples: list[float] = []

        async def worker() -> None:
            for _ in range(execs):
                t = time.perf_counter()
                await box.exec("/bin/true")
                samples.append((time.perf_counter() - t) * 1000)

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(8)))
        wall = time.perf_counter() - t
    line("p50 / p95", f"{statistics.median(samples):8.2f} / {pct(samples, 95):.2f} ms")
    line("throughput", f"{len(samples) / wall:8.1f} execs/s")


def vmm_pss(box: boxlite.Box) -> int:
    """Proportional set size of the box's VMM in bytes: pages shared with other VMMs (a
    snapshot's memory file, QEMU's own code) count a share each."""
    pid = box.info().vmm_pid
    assert pid is not None
    for row in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if row.startswith("Pss:"):
            return int(row.split()[1]) * 1024
    raise AssertionError(f"no Pss in /proc/{pid}/smaps_rollup")


async def bench_idle_boxes(runtime: boxlite.Boxlite, layout: str, count: int) -> None:
    print(f"idle boxes: VMM memory (512 MiB guests) and {count} boxes at once")
    boxes = []
    try:
        for _ in range(count):
            boxes.append(await runtime.create(boxlite.BoxOptions(rootfs_path=layout, memory_mib=512)))
        await asyncio.sleep(2)  # let them settle
        rss = [(await b.metrics()).vmm_rss / 2**20 for b in boxes]
        pss = [vmm_pss(b) / 2**20 for b in boxes]
        answers = await asyncio.gather(*(b.run("echo", ["ok"]) for b in boxes))
        answering = sum(1 for a in answers if a.stdout == "ok\n")
    finally:
        await asyncio.gather(*(b.stop() for b in boxes))
    line("VMM RSS per idle box, median / max (target < 64 MiB)", f"{statistics.median(rss):8.1f} / {max(rss):.1f} MiB")
    line("VMM PSS per idle box, median / max", f"{statistics.median(pss):8.1f} / {max(pss):.1f} MiB")
    line(f"boxes answering (target {count})", f"{answering:8d}")


FILL = "head -c {mib} /dev/zero > /dev/shm/fill"


async def rss_after_fill_and_free(box: boxlite.Box, mib: int, settle_s: float) -> tuple[float, float, float]:
    """The VMM's RSS (MiB) before, with ``mib`` MiB written into the guest's tmpfs, and
    ``settle_s`` seconds after the file was deleted."""

    async def rss() -> float:
        return (await box.metrics()).vmm_rss / 2**20

    before = await rss()
    assert (await box.run("sh", ["-c", FILL.format(mib=mib * 2**20)])).exit_code == 0
    filled = await rss()
    assert (await box.run("rm", ["/dev/shm/fill"])).exit_code == 0
    await asyncio.sleep(settle_s)
    return before, filled, await rss()


async def bench_freed_memory(runtime: boxlite.Boxlite, layout: str, mib: int = 200) -> None:
    """A booted box's RSS after its guest used and freed ``mib`` MiB: with free page reporting
    (the default) and, as the baseline, with reporting turned off in the guest (its balloon
    driver unbound)."""
    print(f"memory a booted 512 MiB box frees ({mib} MiB in its tmpfs, deleted; 6 s later)")
    unbind = (
        "d=$(basename $(dirname $(grep -l 0x0005 /sys/bus/virtio/devices/*/device))); "
        "echo $d > /sys/bus/virtio/drivers/virtio_balloon/unbind"
    )
    previous = os.environ.get("BOXLITE_BOOT_CACHE")
    os.environ["BOXLITE_BOOT_CACHE"] = "0"  # a restored box's RAM is the snapshot's file
    try:
        for label, setup in (("reporting", None), ("baseline, off", unbind)):
            box = await runtime.create(boxlite.BoxOptions(rootfs_path=layout, memory_mib=512))
            try:
                if setup:
                    assert (await box.run("sh", ["-c", setup])).exit_code == 0
                before, filled, after = await rss_after_fill_and_free(box, mib, 6.0)
            finally:
                await box.stop()
            line(f"RSS before / filled / freed: {label}", f"{before:8.1f} / {filled:.1f} / {after:.1f} MiB")
    finally:
        if previous is None:
            del os.environ["BOXLITE_BOOT_CACHE"]
        else:
            os.environ["BOXLITE_BOOT_CACHE"] = previous


async def bench_timeout(runtime: boxlite.Boxlite, layout: str, runs: int = 10) -> None:
    print(f"timeout to every process dead ({runs} runs, a shell with a background child and a setsid daemon)")
    timeout = 1.0
    async with boxlite.SimpleBox(rootfs_path=layout, memory_mib=256, runtime=runtime) as box:
        overshoot = []
        for _ in range(runs):
            t = time.perf_counter()
            result = await box.exec("sh", "-c", "sleep 999 & setsid sleep 998 & sleep 997", timeout=timeout)
            overshoot.append((time.perf_counter() - t - timeout) * 1000)
            assert result.timed_out
            left = await box.exec("sh", "-c", "ps -o args | grep -c '[s]leep 99'")
            assert left.stdout.strip() == "0", left.stdout
    line(
        "from the timeout to the result, all dead, p50 / max",
        f"{statistics.median(overshoot):8.1f} / {max(overshoot):.1f} ms",
    )


async def bench_boots(runtime: boxlite.Boxlite, layout: str, boots: int) -> None:
    print(f"boot reliability ({boots} consecutive boots, create + exec + stop)")
    hangs = failures = 0
    durations = []
    for i in range(boots):
        t = time.perf_counter()
        try:
            box = await runtime.create(boxlite.BoxOptions(rootfs_path=layout, memory_mib=256))
            try:
                result = await asyncio.wait_for((await box.exec("true")).wait(), timeout=60)
                if result.exit_code != 0:
                    failures += 1
            finally:
                await box.stop()
        except boxlite.BoxStartError as e:
            if "did not answer within" in str(e):
                hangs += 1
            else:
                failures += 1
            print(f"    boot {i}: {str(e).splitlines()[0]}")
        except Exception as e:  # every other failure counts too, and is shown
            failures += 1
            print(f"    boot {i}: {type(e).__name__}: {e}")
        durations.append((time.perf_counter() - t) * 1000)
    line("hangs (target 0)", str(hangs))
    line("other failures", str(failures))
    line("cycle time p50 / max", f"{statistics.median(durations):8.1f} / {max(durations):.1f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--boots", type=int, default=200)
    parser.add_argument("--load-execs", type=int, default=50, help="runs per worker of the 8-way exec load")
    parser.add_argument("--idle-boxes", type=int, default=16)
    args = parser.parse_args()
    # Hangs must show as hangs, not as 90-second waits.
    os.environ.setdefault("BOXLITE_BOOT_TIMEOUT", "30")
    images = build_images(["busybox", "python"])
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-") as home:
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
        accel = await runtime.accelerator()
        print(f"host: {os.cpu_count()} CPUs, accelerator {accel['accel']} ({accel['reason']})")
        await bench_start(runtime, str(images["busybox"]), args.starts)
        await bench_exec(runtime, str(images["python"]), args.execs)
        await bench_exec_under_load(runtime, str(images["busybox"]), args.load_execs)
        await bench_timeout(runtime, str(images["busybox"]))
        if args.idle_boxes:
            await bench_idle_boxes(runtime, str(images["busybox"]), args.idle_boxes)
            await bench_freed_memory(runtime, str(images["busybox"]))
        if args.boots:
            await bench_boots(runtime, str(images["busybox"]), args.boots)
        await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
