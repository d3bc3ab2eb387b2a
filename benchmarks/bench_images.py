"""Image benchmarks: pulling from a local registry, box creation on a warm cache, disk per box.

    uv run python benchmarks/bench_images.py [--runs 3]

Starts Debian's docker-registry on 127.0.0.1 (as the tests do), pushes the Python test image
and measures, in the same run:

* pull + prepare (blobs verified into the cache, base disk built) of the Python image into a
  fresh home, against ``skopeo copy`` of the same image from the same registry into an OCI
  layout (the ratio is ours / skopeo's; skopeo does not build a disk);
* pull alone (``runtime.images.pull``) against the same skopeo copy;
* creating a box on a warm cache: what the image stage costs and what it writes (it must copy
  nothing: no new blob, no new base disk);
* the disk a new box uses on the host (its qcow2 overlay).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boxlite

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "images"))
sys.path.insert(0, str(REPO / "tests"))
from build_images import build_images  # noqa: E402
from local_registry import LocalRegistry  # noqa: E402


def line(label: str, value: str) -> None:
    print(f"  {label:<52} {value}")


def tree_bytes(path: Path) -> int:
    """Bytes a tree occupies on disk (sparse files count what they use)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def skopeo_copy(registry: LocalRegistry, reference: str, target: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            "skopeo",
            "--policy",
            str(registry.policy),
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{registry.host}/{reference}",
            f"oci:{target}:latest",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    images = build_images(["python"])
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp_name:
        tmp = Path(tmp_name)
        registry = LocalRegistry(tmp / "registry")
        try:
            registry.push(images["python"], "bookworm-python3", "library/python:slim")
            reference = f"{registry.host}/library/python:slim"
            size = tree_bytes(registry.storage)
            print(f"python test image in the registry: {size / 1e6:.1f} MB")

            skopeo_s, pull_s, prepare_s = [], [], []
            for run in range(args.runs):
                skopeo_s.append(skopeo_copy(registry, "library/python:slim", tmp / f"skopeo-{run}"))
                runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp / f"pull-{run}")))
                started = time.perf_counter()
                await runtime.images.pull(reference)
                pull_s.append(time.perf_counter() - started)
                # Pull + prepare: a fresh home, timed by the engine's image stage of create().
                runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp / f"prepare-{run}")))
                box = await runtime.create(boxlite.BoxOptions(image=reference, memory_mib=256))
                prepare_s.append(box.info().timings["image_ms"] / 1000)
                await box.stop()

            skopeo_med = statistics.median(skopeo_s)
            print(f"\npull from the local registry (median of {args.runs})")
            line("skopeo copy docker:// -> oci: (baseline)", f"{skopeo_med:.2f} s")
            line("runtime.images.pull", f"{statistics.median(pull_s):.2f} s")
            line("  ratio to skopeo", f"{statistics.median(pull_s) / skopeo_med:.2f}x")
            line("pull + prepare (verified blobs + ext4 base disk)", f"{statistics.median(prepare_s):.2f} s")
            line("  ratio to skopeo", f"{statistics.median(prepare_s) / skopeo_med:.2f}x")

            # Warm cache: one home, the image pulled and its disk built once.
            home = tmp / "warm"
            runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
            first = await runtime.create(boxlite.BoxOptions(image=reference, memory_mib=256))
            await first.stop()
            images_before = tree_bytes(home / "images")
            files_before = sorted(p.name for p in (home / "images").rglob("*") if p.is_file())
            image_ms, disk_ms, overlay = [], [], []
            for _ in range(args.runs):
                box = await runtime.create(boxlite.BoxOptions(image=reference, memory_mib=256))
                info = box.info()
                image_ms.append(info.timings["image_ms"])
                disk_ms.append(info.timings["disk_ms"])
                overlay.append((Path(info.dir) / "disk.qcow2").stat().st_blocks * 512)
                await box.stop()
            written = tree_bytes(home / "images") - images_before
            new_files = sorted(set(p.name for p in (home / "images").rglob("*") if p.is_file()) - set(files_before))
            print(f"\nbox creation with a warm cache (median of {args.runs})")
            line("image stage (lookup, resolve, base disk found)", f"{statistics.median(image_ms):.0f} ms")
            line("disk stage (qcow2 overlay)", f"{statistics.median(disk_ms):.0f} ms")
            line("bytes written to the image cache", f"{written} ({len(new_files)} new files)")
            line("disk used by a new box (overlay at first exec)", f"{statistics.median(overlay) / 1024:.0f} KiB")
            line("base disk shared by every box (on host)", f"{tree_bytes(home / 'images/disks') / 1e6:.1f} MB")
        finally:
            registry.stop()


if __name__ == "__main__":
    asyncio.run(main())
