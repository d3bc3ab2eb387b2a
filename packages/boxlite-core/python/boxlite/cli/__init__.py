"""The ``boxlite`` command: images, boxes and the host, with Docker's names and flags.

    boxlite pull python:slim                     # a progress bar on a terminal
    boxlite images | rmi IMAGE | prune           # the image cache
    boxlite run --rm python:slim -- python3 -c 'print(1)'
    boxlite run -d --name work -v ./src:/src:ro -e K=V python:slim
    boxlite run --rm -p 8080:80 python:slim -- python3 -m http.server 80
    boxlite exec work -- python3 /src/main.py    # its exit code is ours
    boxlite cp ./data.csv work:/root/  |  boxlite cp work:/root/out.png ./
    boxlite create | start | stop | restart | rm [-f] BOX
    boxlite fork BOX [-n N]                      # new running boxes from BOX's state (their ids)
    boxlite ls | ps [-a] | stats | inspect BOX | logs BOX
    boxlite snapshot BOX [NAME] | snapshots [--json] | snapshots rm NAME...
    boxlite run -d --from-snapshot NAME          # a new box restored from a snapshot
    boxlite stop --keep-state BOX                # hibernate: `boxlite start BOX` resumes it
    boxlite doctor [--json] | info [--json]
    boxlite mcp [--http PORT]                    # the tools as an MCP server (boxlite mcp --help)

A kept box that runs outlives the command that started it: every command ends without stopping
the boxes it holds, and the next one reattaches them (``BOXLITE_HOME`` records who owns what).
``BOXLITE_HOME``, ``BOXLITE_REGISTRY_MIRRORS`` and the other variables of the README apply.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from typing import NoReturn

from ..errors import BoxliteError, HangupError
from ..runtime import Boxlite
from ._common import ProgressBar, UsageError

#: The command groups: modules of this package, each with ``register(subparsers)`` adding its
#: subcommands. A subcommand sets ``func`` (``async (runtime, args) -> exit code``, on the
#: runtime of ``BOXLITE_HOME``) or ``plain`` (``async (args) -> exit code``, opening what it
#: needs itself). A new group is a module here plus its name in this tuple. By default the
#: program ends without stopping the boxes it holds (see :func:`main`); a subcommand whose own
#: boxes must stop at exit, as a long-running server's, sets ``stop_boxes_at_exit=True``
#: (boxes left running by ``run -d`` that its runtime reattached are then stopped too).
GROUPS: tuple[str, ...] = ("images", "boxes", "doctor", "snapshots")


def parser() -> argparse.ArgumentParser:
    """The ``boxlite`` argument parser, every group's subcommands registered."""
    p = argparse.ArgumentParser(
        prog="boxlite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"{__name__}.{group}").register(sub)
    return p


def run(argv: list[str] | None = None) -> int:
    """Runs one ``boxlite`` command line; its exit code. Boxes the command leaves running stay
    held by this process until it exits (use :func:`main` to leave them running)."""
    return _run(parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    """Runs a parsed command line; its exit code (2: a command line that cannot be carried out,
    1: a BoxLite error, 129: the terminal hung up, 130: interrupted)."""

    async def go() -> int:
        if getattr(args, "plain", None) is not None:
            plain: int = await args.plain(args)
            return plain
        code: int = await args.func(Boxlite.default(), args)
        return code

    try:
        return asyncio.run(go())
    except UsageError as e:
        print(f"boxlite {args.cmd}: {e}", file=sys.stderr)
        return 2
    except HangupError:
        return 129  # as a shell reports SIGHUP; nobody is left to read a message
    except BoxliteError as e:
        print(f"boxlite: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> NoReturn:
    """The ``boxlite`` program: runs the command line, then ends the process without stopping
    the kept boxes it holds (a box started with ``run -d`` or ``start`` keeps running; the next
    command reattaches it). Boxes the command stopped itself, as ``run`` does, are gone."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mcp"]:
        # The MCP server parses its own flags (boxlite.mcp) and stops its boxes when it ends.
        sys.exit(_mcp(argv[1:]))
    args = parser().parse_args(argv)
    code = _run(args)
    if getattr(args, "stop_boxes_at_exit", False):
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _mcp(argv: list[str]) -> int:
    try:
        from ..mcp import main as mcp_main
    except ModuleNotFoundError as e:
        if e.name != "mcp":
            raise
        print("boxlite mcp: the MCP SDK is missing: pip install 'boxlite-core[mcp]'", file=sys.stderr)
        return 1
    return mcp_main(argv)


__all__ = ["GROUPS", "ProgressBar", "main", "parser", "run"]
