"""MCP benchmark: a ``print(1)`` tool call through the stdio server against the direct pooled call.

    uv run python benchmarks/bench_mcp.py [--calls 100] [--image PATH_OR_REF]

Both sides in the same run, on the same kind of pool (one warm box, reused, so every call
finds an idle box with a warm interpreter): the direct side is ``ToolSandbox(pool=...)``
``.run_python("print(1)")`` in this process; the MCP side is the SDK's ``ClientSession``
calling ``boxlite_python`` on ``boxlite mcp --max-uses N`` started as a subprocess over
stdio. Prints p50, p95 and the ratio of the p50s (target, issue 13: under 1.5x); asserts
nothing. Default image: the test image ``python`` (built by ``tests/images/build_images.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import boxlite
from boxlite.tools import ToolSandbox, create_tool_pool
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
from build_images import build_images  # noqa: E402

CODE = "print(1)"


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def line(label: str, value: str) -> None:
    print(f"  {label:<44} {value}")


def report(samples: list[float]) -> str:
    return f"{statistics.median(samples):.2f} ms / {pct(samples, 95):.2f} ms"


async def bench_direct(home: Path, image: str, calls: int) -> list[float]:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    pool = create_tool_pool(image, runtime=runtime, memory_mib=512, min_idle=1, max_size=1, max_uses=1_000_000)
    sandbox = ToolSandbox(pool=pool)
    try:
        await pool.start()
        for _ in range(5):
            await sandbox.run_python(CODE)
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            result = await sandbox.run_python(CODE)
            samples.append((time.perf_counter() - t) * 1000)
            assert result.stdout == "1\n", result
        return samples
    finally:
        await pool.close()


async def bench_mcp(home: Path, image: str, calls: int) -> list[float]:
    args = ["-m", "boxlite.mcp", "--image", image, "--memory", "512", "--pool-size", "1", "--warm", "1"]
    args += ["--max-uses", "1000000"]
    params = StdioServerParameters(command=sys.executable, args=args, env=dict(os.environ, BOXLITE_HOME=str(home)))
    wait = timedelta(seconds=600)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for _ in range(5):
            await session.call_tool("boxlite_python", {"code": CODE}, read_timeout_seconds=wait)
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            result = await session.call_tool("boxlite_python", {"code": CODE}, read_timeout_seconds=wait)
            samples.append((time.perf_counter() - t) * 1000)
            block = result.content[0]
            assert not result.isError and isinstance(block, types.TextContent) and "stdout:\n1" in block.text, result
        return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--image", default=None, help="image or OCI layout (default: the test image python)")
    args = parser.parse_args()
    image = args.image or str(build_images(["python"])["python"])
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as tmp:
        home = Path(tmp) / "home"
        print(f"print(1) tool call, {args.calls} calls each, one warm reused pooled box")
        direct = await bench_direct(home, image, args.calls)
        line("direct ToolSandbox(pool=...) p50 / p95", report(direct))
        through_mcp = await bench_mcp(home, image, args.calls)
        line("MCP stdio round trip p50 / p95", report(through_mcp))
        ratio = statistics.median(through_mcp) / statistics.median(direct)
        line("MCP / direct (p50)", f"{ratio:.2f}x   (target < 1.5x)")
        line("MCP overhead (p50)", f"{statistics.median(through_mcp) - statistics.median(direct):.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
