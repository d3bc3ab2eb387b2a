"""Memory of forks: PSS per box for 1, 4 and 16 forks of one running box, against as many
boxes booted cold that hold the same data, side by side in one run.

    BOXLITE_ACCEL=tcg uv run python benchmarks/bench_fork_memory.py [--data-mib 64] [--counts 1,4,16]

The parent is a 512 MiB busybox box holding ``--data-mib`` MiB of random data it wrote to a
file (in its page cache, so in guest RAM). Each fork is restored from one snapshot whose guest
memory is a file of its own, mapped copy-on-write by every fork: pages no fork wrote are
shared through the host's page cache. Each cold box boots and writes the same amount of data
itself. PSS (proportional set size, from ``/proc/<pid>/smaps_rollup``) splits a shared page's
cost among the processes mapping it, so the sum of the VMMs' PSS is what they cost the host
together. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import boxlite

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
from build_images import build_images  # noqa: E402

MIB = 1024 * 1024


def line(label: str, value: str) -> None:
    print(f"  {label:<50} {value}")


def vmm_memory(box: boxlite.Box) -> tuple[int, int]:
    """(PSS, RSS) in bytes of the box's VMM process."""
    pid = box.info().vmm_pid
    assert pid is not None, f"box {box.id} has no VMM process"
    fields: dict[str, int] = {}
    for row in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = row.split(":", 1)
        fields[key] = int(value.split()[0]) * 1024
    return fields["Pss"], fields["Rss"]


async def settle_and_measure(boxes: list[boxlite.Box]) -> tuple[float, float]:
    """Runs ``true`` in each box, lets them idle a second, and returns the mean PSS and RSS
    per box in MiB."""
    for box in boxes:
        await box.run("true")
    await asyncio.sleep(1)
    sizes = [vmm_memory(box) for box in boxes]
    return (
        sum(p for p, _ in sizes) / len(sizes) / MIB,
        sum(r for _, r in sizes) / len(sizes) / MIB,
    )


def write_data(mib: int) -> list[str]:
    return ["-c", f"dd if=/dev/urandom of=/root/data bs=1048576 count={mib} 2>/dev/null && sync"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-mib", type=int, default=64)
    parser.add_argument("--counts", default="1,4,16")
    args = parser.parse_args()
    counts = [int(n) for n in args.counts.split(",")]
    images = build_images(["busybox"])
    shape = boxlite.BoxOptions(rootfs_path=str(images["busybox"]), memory_mib=512)
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-") as home:
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
        accel = await runtime.accelerator()
        print(f"host: {os.cpu_count()} CPUs, accelerator {accel['accel']} ({accel['reason']})")
        print(f"512 MiB busybox boxes, each holding {args.data_mib} MiB of random data in guest memory")

        parent = await runtime.create(shape)
        written = await parent.run("sh", write_data(args.data_mib))
        assert written.exit_code == 0, written
        parent_pss, parent_rss = (x / MIB for x in vmm_memory(parent))
        line("the parent (booted, wrote the data)", f"PSS {parent_pss:.0f} MiB, RSS {parent_rss:.0f} MiB")

        for count in counts:
            started = time.perf_counter()
            forks = await parent.fork(count)
            took = time.perf_counter() - started
            shared = all(s.shares_memory for s in runtime.snapshots.list() if s.fork_of == parent.id)
            pss, rss = await settle_and_measure(forks)
            line(
                f"{count} fork(s) (fork() took {took * 1000:.0f} ms)",
                f"PSS {pss:.0f} MiB per box, {pss * count:.0f} MiB in all (RSS {rss:.0f} MiB per box)"
                + ("" if shared else "; the snapshot has no memory file"),
            )
            for fork in forks:
                await fork.stop()
                await runtime.remove(fork.id)

        cold_count = max(counts)
        cold: list[boxlite.Box] = []
        started = time.perf_counter()
        for _ in range(cold_count):
            box = await runtime.create(shape)
            written = await box.run("sh", write_data(args.data_mib))
            assert written.exit_code == 0, written
            cold.append(box)
        took = time.perf_counter() - started
        pss, rss = await settle_and_measure(cold)
        line(
            f"{cold_count} cold boxes ({took:.1f} s to boot and write)",
            f"PSS {pss:.0f} MiB per box, {pss * cold_count:.0f} MiB in all (RSS {rss:.0f} MiB per box)",
        )
        for box in cold:
            await box.stop()
        await parent.stop()


if __name__ == "__main__":
    asyncio.run(main())
