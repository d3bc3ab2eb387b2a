"""What the commands share: the command registry, sizes and tables, the pull progress bar, and
the parsing of Docker-shaped flags (``-v``, ``-p``, ``-e``, ``BOX:/path``)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from ..images import PullProgress
from ..runtime import Boxlite

#: A command that works on the runtime of ``BOXLITE_HOME``: returns the exit code.
RuntimeCommand = Callable[[Boxlite, argparse.Namespace], Awaitable[int]]
#: A command that opens no runtime itself (``doctor``, ``info``): returns the exit code.
PlainCommand = Callable[[argparse.Namespace], Awaitable[int]]
#: Adds one command group's subcommands to the parser.
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class UsageError(Exception):
    """A command line that cannot be carried out; the message names the problem and the fix."""


def size(n: float) -> str:
    """``n`` bytes for a person: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def duration(ms: float) -> str:
    """Milliseconds for a person: ``850 ms``, ``12 s``, ``3 min``, ``2 h``."""
    seconds = ms / 1000
    if seconds < 1:
        return f"{ms:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def table(rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    """Prints ``rows`` (the first is the header) as left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out or sys.stdout)


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
            print(f"{event.reference}: {self.layers} layers, {size(self.total)} from {event.source}", file=self.out)
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
            f"\r[{bar}] {fraction * 100:5.1f}%  {size(got)}/{size(self.total)}  layers {self.done_layers}/{self.layers}"
        )
        self.out.flush()

    def finish(self) -> None:
        if self.tty:
            self.out.write("\n")


def parse_volume(spec: str) -> tuple[str, str, str]:
    """``HOST:GUEST[:ro|rw]`` (Docker's ``-v``) as ``(host_dir, guest_path, mode)``."""
    parts = spec.split(":")
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        host, guest, mode = parts
    elif len(parts) == 2:
        (host, guest), mode = parts, "rw"
    else:
        raise UsageError(f"-v {spec!r}: give HOST_DIR:GUEST_PATH or HOST_DIR:GUEST_PATH:ro, e.g. -v ./data:/data:ro")
    if not host or not guest.startswith("/"):
        raise UsageError(
            f"-v {spec!r}: the host directory must be named and the guest path absolute, e.g. ./data:/data"
        )
    return host, guest, mode


def parse_publish(spec: str) -> tuple[int, int, str]:
    """``HOST_PORT:GUEST_PORT[/tcp|/udp]`` (Docker's ``-p``) as ``(host, guest, protocol)``."""
    ports, _, protocol = spec.partition("/")
    protocol = protocol or "tcp"
    host, sep, guest = ports.partition(":")
    if not sep or protocol not in ("tcp", "udp") or not host.isdigit() or not guest.isdigit():
        raise UsageError(f"-p {spec!r}: give HOST_PORT:GUEST_PORT, optionally with /udp, e.g. -p 8080:80")
    return int(host), int(guest), protocol


def parse_env(spec: str) -> tuple[str, str]:
    """``KEY=VALUE`` (Docker's ``-e``) as a pair."""
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise UsageError(f"-e {spec!r}: give KEY=VALUE, e.g. -e DEBUG=1")
    return key, value


@dataclass(frozen=True)
class CopyEnd:
    """One side of ``boxlite cp``: a host path, or a path in a box (``BOX:/path``)."""

    box: str | None
    path: str


def parse_copy_end(spec: str) -> CopyEnd:
    """``BOX:/path`` names a path in a box; anything else (``./file``, ``/tmp/x``) the host's."""
    box, sep, path = spec.partition(":")
    if sep and box and "/" not in box and path:
        return CopyEnd(box, path)
    return CopyEnd(None, spec)


def command(argv: Sequence[str]) -> list[str]:
    """The command after the image or box, without a leading ``--``."""
    items = list(argv)
    return items[1:] if items and items[0] == "--" else items


__all__ = [
    "CopyEnd",
    "PlainCommand",
    "ProgressBar",
    "Register",
    "RuntimeCommand",
    "UsageError",
    "command",
    "duration",
    "parse_copy_end",
    "parse_env",
    "parse_publish",
    "parse_volume",
    "size",
    "table",
]
