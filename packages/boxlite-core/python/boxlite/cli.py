"""The ``boxlite`` command: images, boxes and one-off runs from a shell.

    boxlite pull python:slim            # with a progress bar on a terminal
    boxlite images                      # the image cache
    boxlite run python:slim -- python3 -c 'print(1)'
    boxlite ls                          # boxes of this home, from any process
    boxlite rm BOX [--force]
    boxlite rmi IMAGE | boxlite prune
    boxlite mcp [--http PORT]           # the tools as an MCP server (see boxlite mcp --help)

``BOXLITE_HOME``, ``BOXLITE_REGISTRY_MIRRORS`` and the other variables of the README apply.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

from .errors import BoxliteError
from .images import PullProgress
from .options import BoxOptions
from .runtime import Boxlite


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class ProgressBar:
    """Renders pull progress: one bar over all layers on a terminal, a line per step otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.total = 0
        self.layers = 0
        self.done_layers = 0
        self.per_blob: dict[str, int] = {}

    def __call__(self, event: PullProgress) -> None:
        if event.event == "resolved":
            self.total = event.total_bytes or 0
            self.layers = event.layers or 0
            print(f"{event.reference}: {self.layers} layers, {_size(self.total)} from {event.source}", file=self.out)
        elif event.event == "progress" and event.digest:
            self.per_blob[event.digest] = event.downloaded or 0
        elif event.event == "layer_done" and event.digest:
            self.done_layers += 1
            if not self.tty:
                state = "cached" if event.cached else "downloaded"
                print(f"  {event.digest[:19]} {state}", file=self.out)
        if self.tty:
            self._draw()

    def _draw(self) -> None:
        got = sum(self.per_blob.values())
        fraction = min(1.0, got / self.total) if self.total else (1.0 if self.done_layers else 0.0)
        width = max(10, min(40, shutil.get_terminal_size().columns - 45))
        bar = "#" * int(fraction * width) + "-" * (width - int(fraction * width))
        self.out.write(
            f"\r[{bar}] {fraction * 100:5.1f}%  {_size(got)}/{_size(self.total)}  "
            f"layers {self.done_layers}/{self.layers}"
        )
        self.out.flush()

    def finish(self) -> None:
        if self.tty:
            self.out.write("\n")


async def _pull(runtime: Boxlite, args: argparse.Namespace) -> int:
    bar = ProgressBar(sys.stderr)
    info = await runtime.images.pull(args.image, progress=bar)
    bar.finish()
    print(f"{info.reference} {info.manifest_digest}")
    return 0


async def _images(runtime: Boxlite, args: argparse.Namespace) -> int:
    rows = [("REFERENCE", "DIGEST", "SIZE", "SOURCE")]
    for image in await runtime.images.list():
        rows.append((image.reference, image.manifest_digest[:19], _size(image.size), image.source))
    _table(rows)
    return 0


async def _ls(runtime: Boxlite, args: argparse.Namespace) -> int:
    rows = [("ID", "NAME", "STATUS", "IMAGE")]
    for info in await runtime.list_info():
        rows.append((info.id, info.name or "", info.status, info.image))
    _table(rows)
    return 0


async def _run(runtime: Boxlite, args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SystemExit("boxlite run: give the command to run after the image, e.g. `-- python3 -V`")
    image_field = "rootfs_path" if args.image.startswith(("/", ".")) else "image"
    options = BoxOptions.model_validate({image_field: args.image, "memory_mib": args.memory, "cpus": args.cpus})
    box = await runtime.create(options)
    try:
        execution = await box.exec(command[0], command[1:], timeout=args.timeout)

        async def pump(stream: str, out: TextIO) -> None:
            reader = execution.stdout() if stream == "stdout" else execution.stderr()
            async for chunk in reader.chunks():
                out.buffer.write(chunk)
                out.flush()

        await asyncio.gather(pump("stdout", sys.stdout), pump("stderr", sys.stderr))
        result = await execution.wait()
        if result.timed_out:
            print(f"boxlite: timed out after {args.timeout} s; every process was killed", file=sys.stderr)
        return result.exit_code
    finally:
        await box.stop()


async def _rm(runtime: Boxlite, args: argparse.Namespace) -> int:
    await runtime.remove(args.box, force=args.force)
    return 0


async def _rmi(runtime: Boxlite, args: argparse.Namespace) -> int:
    report = await runtime.images.remove(args.image)
    print(f"removed {args.image}: freed {_size(report.bytes_freed)}")
    return 0


async def _prune(runtime: Boxlite, args: argparse.Namespace) -> int:
    report = await runtime.images.prune()
    print(
        f"{report.blobs_removed} blobs and {report.disks_removed} base disks removed, {_size(report.bytes_freed)} freed"
    )
    return 0


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="boxlite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    pull = sub.add_parser("pull", help="pull an image into the cache")
    pull.add_argument("image")
    pull.set_defaults(func=_pull)
    sub.add_parser("images", help="list cached images").set_defaults(func=_images)
    sub.add_parser("ls", help="list boxes").set_defaults(func=_ls)
    run = sub.add_parser("run", help="run a command in a fresh box, then remove it")
    run.add_argument("image", help="an image reference or an OCI layout / docker-save path")
    run.add_argument("command", nargs=argparse.REMAINDER)
    run.add_argument("--memory", type=int, default=512, help="guest memory in MiB (default 512)")
    run.add_argument("--cpus", type=int, default=1)
    run.add_argument("--timeout", type=float, default=None, help="seconds before every process is killed")
    rm = sub.add_parser("rm", help="remove a box")
    rm.add_argument("box")
    rm.add_argument("--force", action="store_true", help="stop it first if it runs")
    rm.set_defaults(func=_rm)
    rmi = sub.add_parser("rmi", help="remove an image (and blobs nothing else uses)")
    rmi.add_argument("image")
    rmi.set_defaults(func=_rmi)
    sub.add_parser("prune", help="remove blobs and base disks nothing references").set_defaults(func=_prune)
    run.set_defaults(func=_run)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mcp"]:  # `boxlite mcp ...`: the MCP server, its own flags (boxlite.mcp)
        return _mcp(argv[1:])
    args = parser().parse_args(argv)

    async def go() -> int:
        code: int = await args.func(Boxlite.default(), args)
        return code

    try:
        return asyncio.run(go())
    except BoxliteError as e:
        print(f"boxlite: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _mcp(argv: list[str]) -> int:
    try:
        from .mcp import main as mcp_main
    except ModuleNotFoundError as e:
        if e.name != "mcp":
            raise
        print("boxlite mcp: the MCP SDK is missing: pip install 'boxlite-core[mcp]'", file=sys.stderr)
        return 1
    return mcp_main(argv)


if __name__ == "__main__":
    sys.exit(main())
