"""Ray pool benchmark: a remote pooled ``print(1)`` against the local pooled one, and calls per
second with 1, 2 and 3 Ray nodes.

    uv run python benchmarks/bench_ray.py [--calls 20] [--image PATH]

All nodes are raylets on THIS machine (``ray.cluster_utils.Cluster``): a simulation of
scale-out, since every node's VMs share this machine's cores (two, under TCG emulation, on our
CI). The per-call overhead of the remote path (a Ray actor round trip per operation) is real;
the calls/s across nodes are bounded by the one machine's CPUs, not by the cluster's size.

Measures, in the same run (``max_uses=100``: leases reuse warm boxes, so a call is lease +
``python3 -c 'print(1)'`` + release, without a boot):
  * local ``BoxPool`` and ``RayBoxPool`` with 1 node, calls alternated (the overhead: remote
    minus local at p50);
  * ``RayBoxPool`` with 1, 2, 3 nodes, ``--concurrency`` callers at once: calls/s.
Then prints the arithmetic for a real cluster: boxes per node from the measured memory per box
(the VMM's resident memory), and calls/s per node. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boxlite
import ray
from boxlite.pool import BoxPool
from boxlite.ray import RayBoxPool
from ray.cluster_utils import Cluster

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
from build_images import build_images  # noqa: E402

NODE_ARGS: dict[str, Any] = {"num_cpus": 1, "resources": {"boxlite": 1}}
CODE = ["-c", "print(1)"]


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def sequential(lease: Callable[[], Any], calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        async with lease() as held:
            result = await held.box.run("python3", CODE)
        samples.append((time.perf_counter() - started) * 1000)
        assert result.stdout == "1\n", result
    return samples


async def throughput(lease: Callable[[], Any], calls: int, concurrency: int) -> float:
    left = calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with lease() as held:
                await held.box.run("python3", CODE)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started)


def timed(label: str, samples: list[float]) -> list[float]:
    print(f"  {label:<36} p50 {pct(samples, 50):8.1f} ms   p95 {pct(samples, 95):8.1f} ms")
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--image", help="OCI layout with python3 (default: the python test image)")
    args = parser.parse_args()
    layout = args.image or str(build_images()["python"])
    options = boxlite.BoxOptions(image=layout, memory_mib=512)
    os.environ.setdefault("BOXLITE_ACCEL", "tcg")
    print(f"remote vs local pooled print(1), {args.calls} calls each (image={layout})")
    print(f"  SIMULATION: every Ray node runs on this machine ({os.cpu_count()} cores); see the module docs")
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-ray-") as home:
        os.chmod(home, 0o700)
        cluster = Cluster(initialize_head=True, head_node_args=NODE_ARGS)
        ray.init(address=cluster.address, log_to_driver=False)
        rates: dict[int, float] = {}
        local_ms: list[float] = []
        remote_ms: list[float] = []
        try:
            local = BoxPool(options, runtime=boxlite.Boxlite(boxlite.Options(home_dir=home)), max_uses=100)
            remote = RayBoxPool(options, per_node_max=args.concurrency, max_uses=100, home_dir=home)
            await asyncio.gather(local.start(), remote.start())
            await sequential(local.lease, 1)  # warm: the first call of each pays Python's first start
            await sequential(remote.lease, 1)
            # Alternated, so both see the same load from whatever else runs on the machine.
            for _ in range(args.calls):
                local_ms += await sequential(local.lease, 1)
                remote_ms += await sequential(remote.lease, 1)
            timed("local BoxPool", local_ms)
            timed("RayBoxPool, 1 node (this machine)", remote_ms)
            async with remote.lease() as held:
                rss = (await held.box.metrics()).vmm_rss
            local_rate = await throughput(local.lease, args.calls, args.concurrency)
            await asyncio.gather(local.close(), remote.close())
            for count in (1, 2, 3):
                while len(cluster.list_all_nodes()) < count:
                    cluster.add_node(**NODE_ARGS)
                cluster.wait_for_nodes()
                pool = RayBoxPool(options, per_node_max=args.concurrency, min_idle=1, max_uses=100, home_dir=home)
                await pool.start()
                rates[count] = await throughput(pool.lease, args.calls * count, args.concurrency * count)
                await pool.close()
        finally:
            ray.shutdown()
            cluster.shutdown()

    overhead = pct(remote_ms, 50) - pct(local_ms, 50)
    print(f"  remote overhead per pooled call: {overhead:+.1f} ms at p50")
    print(f"  local BoxPool, {args.concurrency} callers: {local_rate:.2f} calls/s")
    for count, rate in rates.items():
        print(f"  RayBoxPool, {count} node(s), {args.concurrency * count} callers: {rate:.2f} calls/s")
    per_box_mib = rss / 2**20
    print("arithmetic for a real cluster (each node its own machine):")
    print(f"  memory per box (VMM resident, measured): {per_box_mib:.0f} MiB")
    example = int(64 * 1024 * 0.8 / per_box_mib) if per_box_mib else 0
    print(f"  boxes per node = node memory x 0.8 / {per_box_mib:.0f} MiB (a 64 GiB node: {example})")
    print(
        f"  calls/s per node ~ the local rate per core x cores ({rates.get(1, 0):.2f} calls/s on one node here); "
        "a cluster's rate ~ that x nodes, minus the remote overhead above per call"
    )


if __name__ == "__main__":
    asyncio.run(main())
