"""A box's clock under TCG. The guest's TSC is the host's counter (QEMU reads it), so the
guest keeps the TSC as its clock, told the host's TSC frequency to within a few ppm: its wall
clock keeps time with the host's, and a box booted while the host is busy does not fall back
to counting timer ticks (which arrive late under a busy TCG: a 4 ms clock that loses time), nor
do the boxes restored from its snapshot (the boot cache takes one on a shape's second boot)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import boxlite
from conftest import boot_cache_entries, shell_output, vmm_command_line

# A memory size no other test uses, so that its boot cache key is its alone in the session.
CLOCK_SHAPE_MIB = 248
CLOCKSOURCE = "cat /sys/devices/system/clocksource/clocksource0/current_clocksource"
# The smallest step between two readings of the monotonic clock, in ns: about 1 us on the TSC,
# 4 ms (a timer tick) on the kernel's tick-counting fallback.
SMALLEST_CLOCK_STEP = """
import time
steps = set()
for _ in range(20000):
    a = time.monotonic_ns()
    steps.add(time.monotonic_ns() - a)
print(min(s for s in steps if s > 0))
"""
# Answers each line on stdin with the guest's wall clock.
CLOCK_PROBE = "import sys, time\nfor _ in sys.stdin:\n    sys.stdout.write(repr(time.time()) + chr(10))\n"
DRIFT_WINDOW_S = 30
# 50 ppm over the window. The guest's clock ran 170 ppm fast when the TSC frequency it was told
# was rounded to 1 MHz (5 ms over the window); it is now within a few ppm.
DRIFT_LIMIT_S = 0.0015


@contextmanager
def busy_host() -> Iterator[None]:
    """Every host CPU busy (one spinning process more than there are CPUs) while inside."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range((os.cpu_count() or 1) + 1)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


async def test_boxes_booted_on_a_busy_host_and_their_restores_keep_the_tsc_clock(
    runtime: boxlite.Boxlite, python_image: str, home: Path
) -> None:
    # The kernel's clocksource watchdog checks the boot-time TSC clock against timer ticks
    # every 0.5 s; while the host is busy the ticks come late and it blamed the TSC.
    shape = boxlite.BoxOptions(rootfs_path=python_image, memory_mib=CLOCK_SHAPE_MIB)
    boxes: list[boxlite.Box] = []
    try:
        with busy_host():
            boxes.append(await runtime.create(shape))
            boxes.append(await runtime.create(shape))  # snapshotted for the boot cache
            await asyncio.sleep(3)
        assert len(boot_cache_entries(home, CLOCK_SHAPE_MIB)) == 1
        boxes.append(await runtime.create(shape))
        assert "-incoming defer" in vmm_command_line(boxes[2]), "the third box is restored"
        for box in boxes:
            assert await shell_output(box, CLOCKSOURCE) == "tsc", box.id
            step_ns = int(await shell_output(box, f"python3 -c '{SMALLEST_CLOCK_STEP}'"))
            assert step_ns < 100_000, f"{box.id}: the clock moves in steps of {step_ns} ns"
    finally:
        for box in boxes:
            await box.stop()


async def guest_clock_offset(probe: boxlite.Execution, lines: AsyncIterator[str]) -> tuple[float, float]:
    """Bounds (s) of the guest's wall clock minus the host's, from the quickest of ten round
    trips to ``probe`` (:data:`CLOCK_PROBE`): the guest read its clock between the host's two
    readings."""
    best = (-float("inf"), float("inf"))
    for _ in range(10):
        before = time.time()
        await probe.stdin().send_input("?\n")
        guest = float(await anext(lines))
        after = time.time()
        if after - before < best[1] - best[0]:
            best = (guest - after, guest - before)
    return best


async def test_a_busy_box_clock_keeps_time_with_the_host(runtime: boxlite.Boxlite, python_image: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=python_image, memory_mib=256, cpus=2))
    load: list[boxlite.Execution] = []
    try:
        probe = await box.exec("python3", ["-u", "-c", CLOCK_PROBE])
        lines = aiter(probe.stdout())
        low, high = await guest_clock_offset(probe, lines)
        load = [await box.exec("sh", ["-c", "while :; do :; done"]) for _ in range(2)]
        await asyncio.sleep(DRIFT_WINDOW_S)
        for spinner in load:
            await spinner.kill()
        later_low, later_high = await guest_clock_offset(probe, lines)
        # How far the guest's clock moved against the host's over the window, bounded.
        drift = (later_low - high, later_high - low)
        assert drift[0] < DRIFT_LIMIT_S and drift[1] > -DRIFT_LIMIT_S, (
            f"the guest's clock drifted by {drift[0] * 1000:.1f} to {drift[1] * 1000:.1f} ms in {DRIFT_WINDOW_S} s"
        )
        await probe.kill()
    finally:
        await box.stop()
