"""``boxlite pull``, ``images``, ``rmi``, ``prune``: the image cache."""

from __future__ import annotations

import argparse
import sys

from ..runtime import Boxlite
from ._common import ProgressBar, size, table


async def pull(runtime: Boxlite, args: argparse.Namespace) -> int:
    bar = ProgressBar(sys.stderr)
    info = await runtime.images.pull(args.image, progress=bar)
    bar.finish()
    print(f"{info.reference} {info.manifest_digest}")
    return 0


async def images(runtime: Boxlite, args: argparse.Namespace) -> int:
    rows = [("REFERENCE", "DIGEST", "SIZE", "SOURCE")]
    for image in await runtime.images.list():
        rows.append((image.reference, image.manifest_digest[:19], size(image.size), image.source))
    table(rows)
    return 0


async def rmi(runtime: Boxlite, args: argparse.Namespace) -> int:
    report = await runtime.images.remove(args.image)
    print(f"removed {args.image}: freed {size(report.bytes_freed)}")
    return 0


async def prune(runtime: Boxlite, args: argparse.Namespace) -> int:
    report = await runtime.images.prune()
    print(
        f"{report.blobs_removed} blobs and {report.disks_removed} base disks removed, {size(report.bytes_freed)} freed"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pull", help="pull an image into the cache (with a progress bar)")
    p.add_argument("image")
    p.set_defaults(func=pull)
    sub.add_parser("images", help="list cached images").set_defaults(func=images)
    p = sub.add_parser("rmi", help="remove an image (and blobs nothing else uses)")
    p.add_argument("image")
    p.set_defaults(func=rmi)
    sub.add_parser("prune", help="remove blobs and base disks nothing references").set_defaults(func=prune)
