"""BrowserBox benchmark: cold start to the first page, where that time goes, screenshot latency,
VMM memory.

    BOXLITE_ACCEL=tcg uv run python benchmarks/bench_browser.py [--runs 2] [--screenshots 10]
        [--flags="--no-zygote --renderer-process-limit=1"]
    BOXLITE_ACCEL=tcg uv run python benchmarks/bench_browser.py --pool [--runs 2]

Boots the ``browser`` test image (Debian's Chromium; built on first use) ``--runs`` times, one
box at a time, and prints medians; asserts nothing. ``--flags`` adds Chromium flags to
``boxlite.browserbox.CHROMIUM_FLAGS`` for a comparison run. Needs Playwright for Python
(``boxlite-core[browser]``).

``--pool`` measures instead what an agent waits for at its first browser call (the browser
tools' ``navigate``, through Playwright over CDP): on a cold ``BrowserBox`` the session starts,
and on a box leased from a warm ``create_browser_pool`` (``min_idle=1``), one session after
another (each lease a fresh box; the pool refills in the background, on the same CPUs).
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
from boxlite import browserbox
from boxlite.tools import BrowserToolSession, create_browser_pool

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
from build_images import build_images  # noqa: E402

PAGE = "<!doctype html><title>Bench page</title><h1>BoxLite</h1><p>" + "text " * 200 + "</p>"


def line(label: str, value: str) -> None:
    print(f"  {label:<46} {value}")


async def one_run(runtime: boxlite.Boxlite, image: str, pages: str, screenshots: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    t0 = time.perf_counter()
    box = boxlite.BrowserBox(runtime=runtime, image=image, volumes=[(pages, "/srv/pages", "ro")])
    await boxlite.SimpleBox.start(box)
    figures["box start (VM boot to agent)"] = time.perf_counter() - t0
    await box.start()
    t1 = time.perf_counter()
    try:
        await box.endpoint(timeout=600)
        t2 = time.perf_counter()
        figures["Chromium start to CDP answering"] = t2 - t1
        browser = await box.connect(timeout=600)
        page = await browser.new_page(viewport={"width": 1024, "height": 768})
        t3 = time.perf_counter()
        figures["connect + new page"] = t3 - t2
        await page.goto("file:///srv/pages/index.html")
        t4 = time.perf_counter()
        figures["first page load"] = t4 - t3
        figures["BrowserBox() to first page loaded"] = t4 - t0
        shots = []
        for _ in range(screenshots):
            s = time.perf_counter()
            await page.screenshot()
            shots.append(time.perf_counter() - s)
        figures["screenshot 1024x768 (median)"] = statistics.median(shots)
        second = []
        for _ in range(3):
            s = time.perf_counter()
            await page.goto("file:///srv/pages/index.html")
            second.append(time.perf_counter() - s)
        figures["warm page load (median)"] = statistics.median(second)
        metrics = await box.metrics()
        figures["VMM RSS (MiB)"] = metrics.vmm_rss / 2**20
        figures["guest memory in use (MiB)"] = metrics.mem / 2**20
    finally:
        t5 = time.perf_counter()
        await box.shutdown()
        figures["shutdown"] = time.perf_counter() - t5
    return figures


async def first_call(session: BrowserToolSession) -> float:
    """Seconds from a session's first action (navigate to a small page) to its result."""
    started = time.perf_counter()
    result = await session.navigate("data:text/html,<title>first</title>", timeout=600)
    elapsed = time.perf_counter() - started
    assert not result.error, result.text
    await session.close()
    return elapsed


async def pool_figures(runtime: boxlite.Boxlite, image: str, runs: int) -> None:
    options = boxlite.BrowserBoxOptions(image=image)
    cold = [await first_call(BrowserToolSession(options=options, runtime=runtime)) for _ in range(runs)]
    pool = create_browser_pool(boxlite.BrowserBoxOptions(), image=image, runtime=runtime, min_idle=1, max_size=2)
    t = time.perf_counter()
    await pool.start()
    filled = time.perf_counter() - t
    warm, refills = [], []
    for _ in range(runs):
        t = time.perf_counter()
        while pool.stats().idle < 1:  # the refill of the previous lease
            await asyncio.sleep(0.05)
        if warm:
            refills.append(time.perf_counter() - t + warm[-1])  # it started with that lease
        warm.append(await first_call(BrowserToolSession(pool=pool)))
    await pool.close()
    print(f"first browser call of an agent (navigate), medians of {runs} runs")
    line("cold BrowserBox started by the session", f"{statistics.median(cold):.2f} s")
    line("pool.start() (one ready browser)", f"{filled:.2f} s")
    line("leased from a warm pool", f"{statistics.median(warm):.2f} s")
    if refills:
        # A refill restores the pool's snapshot, taken with Chromium started: no boot, no start.
        line("refill: lease to the next ready browser", f"{statistics.median(refills):.2f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--screenshots", type=int, default=10)
    parser.add_argument("--flags", default="", help="extra Chromium flags, space-separated")
    parser.add_argument("--pool", action="store_true", help="first tool call: warm pool vs cold box")
    args = parser.parse_args()
    if args.flags:
        browserbox.CHROMIUM_FLAGS = (*browserbox.CHROMIUM_FLAGS, *args.flags.split())
    image = str(build_images(["browser"])["browser"])
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as pages:
        Path(pages, "index.html").write_text(PAGE)
        os.chmod(pages, 0o755)
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
        print(f"BrowserBox on {await runtime.accelerator()}, {os.cpu_count()} host CPUs, box 2 vCPUs / 2048 MiB")
        print(f"Chromium flags: {' '.join(browserbox.CHROMIUM_FLAGS)}")
        t = time.perf_counter()
        async with boxlite.SimpleBox(image=image, runtime=runtime, memory_mib=256) as warm:
            await warm.exec("true")
        line("first use of the image (unpack, boot, stop)", f"{time.perf_counter() - t:.2f} s")
        if args.pool:
            await pool_figures(runtime, image, args.runs)
            await runtime.shutdown()
            return
        runs = [await one_run(runtime, image, pages, args.screenshots) for _ in range(args.runs)]
        print(f"medians of {args.runs} runs (seconds unless stated)")
        for key in runs[0]:
            value = statistics.median(r[key] for r in runs)
            line(key, f"{value:.0f}" if "MiB" in key else f"{value:.2f}")
        await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
