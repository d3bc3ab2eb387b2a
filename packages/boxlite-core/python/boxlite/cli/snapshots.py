"""``boxlite snapshot BOX [NAME]``, ``snapshots [--json]``, ``snapshots rm NAME...``: the
snapshots of ``BOXLITE_HOME`` (a box's whole state, from which ``boxlite run --from-snapshot``
starts new boxes; see :mod:`boxlite.snapshots`)."""

from __future__ import annotations

import argparse
import json
import sys

from ..runtime import Boxlite
from ..snapshots import SnapshotInfo
from ._common import command, size, table


async def snapshot(runtime: Boxlite, args: argparse.Namespace) -> int:
    """Saves a running box's whole state; prints the snapshot's id and name."""
    from .boxes import _running

    box = await _running(runtime, args.box)
    info = await box.snapshot(args.name)
    print(f"{info.id} {info.name}")
    print(f"saved box {args.box} in {info.took_ms} ms ({size(info.size_bytes)} on disk)", file=sys.stderr)
    return 0


def _row(info: SnapshotInfo) -> tuple[str, str, str, str, str, str]:
    return (info.name, info.id, info.source_box, info.image, size(info.size_bytes), info.created_at)


async def snapshots(runtime: Boxlite, args: argparse.Namespace) -> int:
    """Lists the snapshots (a table, or JSON with ``--json``)."""
    found = runtime.snapshots.list()
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in found], indent=2))
        return 0
    rows = [("NAME", "ID", "SOURCE BOX", "IMAGE", "SIZE", "CREATED")]
    rows.extend(_row(s) for s in found)
    table(rows)
    return 0


async def rm(runtime: Boxlite, args: argparse.Namespace) -> int:
    """Removes snapshots by name or id (refused while a box restored from one exists)."""
    for name in args.snapshots:
        runtime.snapshots.remove(name)
        print(name)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("snapshot", help="save a running box's whole state as a snapshot; prints its id and name")
    p.add_argument("box")
    p.add_argument("name", nargs="?", default=None, help="the snapshot's name (default: its id)")
    p.set_defaults(func=snapshot)

    p = sub.add_parser("snapshots", help="list snapshots (--json), or remove them: `boxlite snapshots rm NAME...`")
    p.add_argument("--json", action="store_true", help="the snapshots' records as JSON")
    p.set_defaults(func=snapshots)
    actions = p.add_subparsers(dest="snapshots_cmd", metavar="{ls,rm}")
    actions.add_parser("ls", help="list snapshots (the default)").set_defaults(func=snapshots, json=False)
    q = actions.add_parser("rm", help="remove snapshots (refused while a box restored from one exists)")
    q.add_argument("snapshots", nargs="+", metavar="NAME")
    q.set_defaults(func=rm)


def from_snapshot_command(args: argparse.Namespace) -> list[str]:
    """``run --from-snapshot NAME [--] CMD...``: the command. There is no image then (the box
    gets the snapshot's), so the optional image argument holds the command's first word."""
    rest = command(args.command)
    return ([args.image] if args.image is not None else []) + rest


__all__ = ["from_snapshot_command", "register"]
