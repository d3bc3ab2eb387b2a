"""Box commands with Docker's names and flags: ``run``, ``shell``, ``create``, ``start``, ``stop``,
``restart``, ``exec``, ``cp``, ``rm``, ``ls``/``ps``, ``stats``, ``inspect``, ``logs``; and
``fork`` (new boxes that continue from a running one).

A kept box (``create``, ``run -d``, or ``run`` without ``--rm``) lives in ``BOXLITE_HOME``; a
running one outlives the command that started it, and the next command reattaches it (see
``cli/__init__.py``: the process ends without stopping the boxes it holds)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .._runtime.box import MAX_FORKS, Box
from .._runtime.execution import Execution
from .._runtime.info import BoxInfo, BoxMetrics
from .._runtime.progress import StartProgress
from ..errors import BoxliteConflictError, BoxliteError
from ..interactivebox import attach
from ..options import BoxOptions
from ..runtime import Boxlite
from ._common import (
    ProgressBar,
    UsageError,
    command,
    duration,
    parse_copy_end,
    parse_env,
    parse_publish,
    parse_volume,
    size,
    table,
)
from .snapshots import from_snapshot_command

#: Guest memory of a box the CLI starts when ``-m`` is not given, in MiB.
DEFAULT_MEMORY_MIB = 512
_MEMORY = re.compile(r"^(\d+)([kmg]?)i?b?$", re.IGNORECASE)
#: The command ``run -i/-t`` and ``shell`` start when none is given.
DEFAULT_SHELL = "/bin/sh"


def parse_memory(text: str) -> int:
    """``-m``: MiB as a number (``512``) or with Docker's suffixes (``512m``, ``2g``)."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise UsageError(f"-m {text!r}: give the guest memory in MiB (512) or with a unit (512m, 2g)")
    number, unit = int(match.group(1)), match.group(2).lower()
    mib = {"": number, "m": number, "g": number * 1024, "k": number // 1024}[unit]
    return mib


def box_options(args: argparse.Namespace, keep: bool) -> BoxOptions:
    """The options of a box from ``run``'s and ``create``'s flags. A kept box's network and port
    forwards outlive this command: the engine supervises them from a process of their own."""
    image_field = "rootfs_path" if args.image.startswith(("/", ".")) else "image"
    volumes = []
    for spec in args.volume:
        host, guest, mode = parse_volume(spec)
        if not Path(host).is_dir():
            raise UsageError(f"-v {spec!r}: {host} is not a directory on this host (volumes share directories)")
        volumes.append((str(Path(host).resolve()), guest, mode))
    return BoxOptions.model_validate(
        {
            image_field: args.image,
            "name": args.name,
            "memory_mib": parse_memory(args.memory),
            "cpus": args.cpus,
            "env": [parse_env(e) for e in args.env],
            "volumes": volumes,
            "ports": [parse_publish(p) for p in args.publish],
            "network_enabled": args.network != "none",
            "auto_remove": not keep,
        }
    )


def _stages(info: BoxInfo) -> str:
    stages = [
        f"{stage.removesuffix('_ms')} {duration(ms)}"
        for stage, ms in info.timings.items()
        if ms and stage != "guest_uptime_ms"
    ]
    return ", ".join(stages) or "no stage timings"


def _stage_line(stage: str, options: BoxOptions) -> str:
    """What a terminal's ticker says while ``stage`` runs."""
    source = options.image or options.rootfs_path
    if stage == "base_disk":
        return f"preparing the base disk of {source} (built once per image)"
    if stage == "restore":
        return f"restoring a box from snapshot {options.snapshot}"
    return f"booting a box from {source}"


async def start_box(runtime: Boxlite, options: BoxOptions, out: TextIO, always: bool) -> Box:
    """Creates and boots a box, telling ``out`` what is going on from the API's progress
    events: a missing image is pulled with the progress bar of ``boxlite pull``; then, on a
    terminal, a line that counts the seconds of each stage (the first box of an image waits for
    its base disk); then, on a terminal or when ``always``, the summary with each stage's time."""
    tty = out.isatty()
    started = time.monotonic()
    bar: ProgressBar | None = None
    ticking: dict[str, float | str] = {}  # the line a terminal shows now, and since when

    def on_progress(event: StartProgress) -> None:
        nonlocal bar
        if event.stage == "pull":
            if event.event == "started":
                bar = ProgressBar(out)
            elif event.event == "progress" and bar is not None and event.pull is not None:
                bar(event.pull)
            elif event.event == "done" and bar is not None:
                bar.finish()
        elif event.event == "started":
            ticking.update(line=_stage_line(event.stage, options), since=time.monotonic())
        else:
            ticking.clear()

    async def ticker() -> None:
        while True:
            if ticking:
                out.write(f"\r\033[K{ticking['line']}... {time.monotonic() - float(ticking['since']):.0f} s")
                out.flush()
            await asyncio.sleep(1)

    task = asyncio.create_task(ticker()) if tty else None
    try:
        box = await runtime.create(options, progress=on_progress)
    finally:
        if task is not None:
            task.cancel()
            out.write("\r\033[K")
    if tty or always:
        elapsed = time.monotonic() - started
        print(f"box {box.id} started in {elapsed:.1f} s ({_stages(box.info())}) on {box.info().accel}", file=out)
    return box


async def stream(execution: Execution) -> int:
    """Copies an execution's output to ours as it comes; its exit code. Without ``-i`` the
    command's stdin is at its end from the start (as with ``docker run``), so ``cat`` ends."""
    await execution.stdin().close()

    async def pump(name: str, out: TextIO) -> None:
        reader = execution.stdout() if name == "stdout" else execution.stderr()
        async for chunk in reader.chunks():
            out.buffer.write(chunk)
            out.flush()

    await asyncio.gather(pump("stdout", sys.stdout), pump("stderr", sys.stderr))
    result = await execution.wait()
    if result.timed_out:
        print("boxlite: timed out; every process the command started was killed", file=sys.stderr)
    return result.exit_code


async def attached(execution: Execution, forward_stdin: bool) -> int:
    """``-i``/``-t``: the execution attached to our terminal (see :func:`boxlite.interactivebox.attach`);
    its exit code."""
    result = await attach(execution, forward_stdin=forward_stdin)
    if result.timed_out:
        print("boxlite: timed out; every process the command started was killed", file=sys.stderr)
    return result.exit_code


def snapshot_options(args: argparse.Namespace, keep: bool) -> BoxOptions:
    """The options of a box ``run --from-snapshot`` restores: its name, environment, port
    forwards and ``--rm``; the snapshot fixes the image and the VM's shape."""
    if args.volume:
        raise UsageError("-v with --from-snapshot: a restored box cannot have volumes; copy files in with `boxlite cp`")
    return BoxOptions.model_validate(
        {
            "snapshot": args.from_snapshot,
            "name": args.name,
            "env": [parse_env(e) for e in args.env],
            "ports": [parse_publish(p) for p in args.publish],
            "auto_remove": not keep,
        }
    )


async def run(runtime: Boxlite, args: argparse.Namespace) -> int:
    if args.from_snapshot is None and args.image is None:
        raise UsageError("give the image to start a box from (or --from-snapshot NAME)")
    argv = command(args.command) if args.from_snapshot is None else from_snapshot_command(args)

    def options(keep: bool) -> BoxOptions:
        return box_options(args, keep) if args.from_snapshot is None else snapshot_options(args, keep)

    interactive = args.interactive or args.tty
    if args.detach:
        if interactive:
            raise UsageError("-i/-t with -d: a detached box has no terminal; `boxlite exec -it BOX sh` attaches one")
        if args.rm:
            raise UsageError("--rm with -d: a detached box is kept until `boxlite rm -f BOX`; drop --rm")
        if argv:
            raise UsageError(
                "run -d starts a kept box and runs no command in it: drop the command, then `boxlite exec BOX -- CMD`"
            )
        box = await start_box(runtime, options(True), sys.stderr, always=True)
        print(box.name or box.id)
        return 0
    if not argv and not interactive:
        raise UsageError(
            "give the command to run after the image, e.g. `-- python3 -V` (or -d to keep the box running, "
            "or -it for a shell)"
        )
    argv = argv or [DEFAULT_SHELL]
    box = await start_box(runtime, options(not args.rm), sys.stderr, always=False)
    try:
        execution = await box.exec(argv[0], argv[1:], timeout=args.timeout, tty=args.tty)
        if interactive:
            return await attached(execution, forward_stdin=args.interactive)
        return await stream(execution)
    finally:
        await box.stop()


async def shell(runtime: Boxlite, args: argparse.Namespace) -> int:
    """``boxlite shell IMAGE``: a throwaway box with its shell attached to our terminal (on a
    pseudo-terminal when stdin is one, else piped), as :class:`~boxlite.InteractiveBox` does."""
    box = await start_box(runtime, box_options(args, keep=False), sys.stderr, always=False)
    try:
        execution = await box.exec(args.shell, tty=sys.stdin.isatty())
        return await attached(execution, forward_stdin=True)
    finally:
        await box.stop()


async def create(runtime: Boxlite, args: argparse.Namespace) -> int:
    box = await start_box(runtime, box_options(args, True), sys.stderr, always=True)
    await box.stop()
    print(box.name or box.id)
    return 0


async def _box(runtime: Boxlite, name: str) -> Box:
    try:
        return await runtime.get(name)
    except BoxliteConflictError as e:
        raise UsageError(f"{e} (another boxlite command or program is using it now; try again when it ends)") from e


async def _running(runtime: Boxlite, name: str) -> Box:
    box = await _box(runtime, name)
    if box.info().status != "running":
        raise UsageError(f"box {name} is {box.info().status}: start it first with `boxlite start {name}`")
    return box


async def start(runtime: Boxlite, args: argparse.Namespace) -> int:
    """Starts kept boxes; one stopped with ``--keep-state`` resumes where it was (unless
    ``--discard-state``)."""
    for name in args.boxes:
        box = await _box(runtime, name)
        if box.info().status != "running":
            await box.start(discard_state=args.discard_state)
        print(name)
    return 0


async def stop(runtime: Boxlite, args: argparse.Namespace) -> int:
    """Stops running boxes; with ``--keep-state`` their whole state is saved first (hibernated)."""
    keep_state: bool = args.keep_state
    for name in args.boxes:
        box = await _box(runtime, name)
        info = box.info()
        if info.status == "running" or (keep_state and info.status == "paused"):
            await box.stop(keep_state=keep_state)
        elif keep_state and not info.hibernated:
            raise UsageError(f"box {name} is {info.status}: --keep-state saves a running box")
        print(name)
    return 0


async def restart(runtime: Boxlite, args: argparse.Namespace) -> int:
    for name in args.boxes:
        box = await _box(runtime, name)
        if box.info().status == "running":
            await box.stop()
        await box.start()
        print(name)
    return 0


async def exec_(runtime: Boxlite, args: argparse.Namespace) -> int:
    argv = command(args.command)
    if not argv:
        raise UsageError(f"give the command after the box, e.g. `boxlite exec {args.box} -- ls /`")
    box = await _running(runtime, args.box)
    env = [parse_env(e) for e in args.env]
    execution = await box.exec(
        argv[0], argv[1:], env, working_dir=args.workdir, user=args.user, timeout=args.timeout, tty=args.tty
    )
    if args.interactive or args.tty:
        return await attached(execution, forward_stdin=args.interactive)
    return await stream(execution)


async def cp(runtime: Boxlite, args: argparse.Namespace) -> int:
    source, dest = parse_copy_end(args.source), parse_copy_end(args.dest)
    if (source.box is None) == (dest.box is None):
        raise UsageError(
            "exactly one side names a box, as BOX:/path: `boxlite cp ./file BOX:/root/` "
            "or `boxlite cp BOX:/root/out ./`"
        )
    if dest.box is not None:
        await (await _running(runtime, dest.box)).copy_in(source.path, dest.path)
    elif source.box is not None:
        await (await _running(runtime, source.box)).copy_out(source.path, dest.path)
    return 0


async def rm(runtime: Boxlite, args: argparse.Namespace) -> int:
    for name in args.boxes:
        if not args.force and (await runtime.get_info(name)).status == "running":
            raise UsageError(f"box {name} is running: stop it first (`boxlite stop {name}`), or `boxlite rm -f {name}`")
        await runtime.remove(name, force=args.force)
        print(name)
    return 0


# fork (issue 12): `boxlite fork BOX [-n N]`.
async def fork(runtime: Boxlite, args: argparse.Namespace) -> int:
    """Forks a running box into N new running boxes and prints their ids, one a line. The
    forks take the box's options (a kept box's forks are kept) without its name or ports."""
    if not 1 <= args.count <= MAX_FORKS:
        raise UsageError(f"-n {args.count}: give 1 to {MAX_FORKS} forks (run `boxlite fork` again for more)")
    box = await _running(runtime, args.box)
    for forked in await box.fork(args.count):
        print(forked.id)
    return 0


async def ls(runtime: Boxlite, args: argparse.Namespace) -> int:
    rows = [("ID", "NAME", "STATUS", "IMAGE")]
    for info in await runtime.list_info():
        status = f"{info.status} (hibernated)" if info.hibernated else info.status
        rows.append((info.id, info.name or "", status, info.image))
    table(rows)
    return 0


async def _metrics(runtime: Boxlite, info: BoxInfo) -> BoxMetrics | None:
    """A running box's metrics, or None when another live process holds it."""
    if info.status != "running":
        return None
    try:
        return await (await runtime.get(info.id)).metrics()
    except BoxliteError:
        return None


async def ps(runtime: Boxlite, args: argparse.Namespace) -> int:
    rows = [("ID", "NAME", "STATUS", "IMAGE", "UPTIME", "MEMORY", "CPU TIME", "ACCEL")]
    for info in await runtime.list_info():
        if info.status != "running" and not args.all:
            continue
        m = await _metrics(runtime, info)
        rows.append(
            (
                info.id,
                info.name or "",
                info.status,
                info.image,
                duration(m.guest_uptime_ms) if m else "-",
                f"{size(m.mem)} / {size(m.mem_total)}" if m else "-",
                duration(m.cpu_user_ms + m.cpu_system_ms) if m else "-",
                info.accel if info.status == "running" else "-",
            )
        )
    table(rows)
    return 0


async def stats(runtime: Boxlite, args: argparse.Namespace) -> int:
    infos = [await runtime.get_info(b) for b in args.boxes] if args.boxes else await runtime.list_info()
    rows = [("ID", "NAME", "MEM USAGE / LIMIT", "MEM %", "GUEST CPU", "VMM CPU", "VMM RSS", "PIDS", "EXECS")]
    for info in infos:
        m = await _metrics(runtime, info)
        if m is None:
            if args.boxes:
                raise UsageError(f"box {info.name or info.id} is {info.status}: stats are for running boxes")
            continue
        rows.append(
            (
                info.id,
                info.name or "",
                f"{size(m.mem)} / {size(m.mem_total)}",
                f"{100 * m.mem / m.mem_total:.1f}%" if m.mem_total else "-",
                duration(m.cpu_user_ms + m.cpu_system_ms),
                duration(m.vmm_cpu_ms),
                size(m.vmm_rss),
                str(m.processes),
                f"{m.execs_running}/{m.execs_started}",
            )
        )
    table(rows)
    return 0


async def inspect(runtime: Boxlite, args: argparse.Namespace) -> int:
    found: list[dict[str, Any]] = []
    for name in args.boxes:
        found.append((await runtime.get_info(name)).model_dump(mode="json"))
    print(json.dumps(found, indent=2))
    return 0


def _log_text(path: Path) -> str:
    parts = [p.read_text(errors="replace") for p in (path.with_name(path.name + ".1"), path) if p.is_file()]
    return "".join(parts)


async def logs(runtime: Boxlite, args: argparse.Namespace) -> int:
    info = await runtime.get_info(args.box)
    box_dir = Path(info.dir)
    names = ["console.log"] + (["vmm.log", "passt.log"] if args.all else [])
    for name in names:
        text = _log_text(box_dir / name)
        if args.tail is not None:
            text = "".join(text.splitlines(keepends=True)[-args.tail :]) if args.tail else ""
        if args.all:
            print(f"==> {name} <==")
        sys.stdout.write(text)
        if not text and name == "console.log":
            print(
                f"(the console of box {args.box} is empty: the guest writes only warnings and errors there; "
                "--all adds QEMU's and passt's logs)",
                file=sys.stderr,
            )
    return 0


def _box_flags(p: argparse.ArgumentParser, image: str | None = None) -> None:
    p.add_argument(
        "image",
        nargs=image,
        help="an image reference, or an OCI layout / docker-save path (./dir, /dir)",
    )
    p.add_argument("--name", help="a unique name to find the box by")
    p.add_argument(
        "-m", "--memory", default=str(DEFAULT_MEMORY_MIB), help="guest memory: MiB, or 512m, 2g (default 512)"
    )
    p.add_argument("--cpus", type=int, default=1, help="virtual CPUs (default 1)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="environment of every command")
    p.add_argument(
        "-v", "--volume", action="append", default=[], metavar="HOST:GUEST[:ro]", help="share a host directory"
    )
    p.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="HOST:GUEST[/udp]",
        help="127.0.0.1:HOST reaches GUEST in the box",
    )
    p.add_argument("--network", choices=["default", "none"], default="default", help="none: no network device at all")


def _interactive_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open: ours goes to the command")
    p.add_argument(
        "-t", "--tty", action="store_true", help="run the command on a pseudo-terminal (ours in raw mode with -i)"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a command in a new box (kept unless --rm), or start a kept box with -d")
    _box_flags(p, image="?")
    p.add_argument(
        "--from-snapshot",
        metavar="NAME",
        help="restore the box from this snapshot instead of booting an image (give no image)",
    )
    _interactive_flags(p)
    p.add_argument(
        "-d", "--detach", action="store_true", help="start a kept box, leave it running, print its name or id"
    )
    p.add_argument("--rm", action="store_true", help="remove the box when the command ends")
    p.add_argument("--timeout", type=float, default=None, help="seconds before every process is killed (exit 124)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=run)

    p = sub.add_parser("shell", help="a shell in a new box, attached to this terminal; the box is removed after")
    _box_flags(p)
    p.add_argument("--shell", default=DEFAULT_SHELL, help=f"the shell to start (default {DEFAULT_SHELL})")
    p.set_defaults(func=shell)

    p = sub.add_parser("create", help="create a kept box (stopped); `boxlite start` runs it")
    _box_flags(p)
    p.set_defaults(func=create)

    for name, func, text in (
        ("start", start, "start kept boxes (they keep running after this command)"),
        ("stop", stop, "stop running boxes (kept boxes keep their files)"),
        ("restart", restart, "stop and start boxes"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("boxes", nargs="+", metavar="BOX")
        p.set_defaults(func=func)
        if name == "start":
            p.add_argument(
                "--discard-state",
                action="store_true",
                help="boot a box stopped with --keep-state from its disk, its saved state deleted",
            )
        if name == "stop":
            p.add_argument(
                "--keep-state",
                action="store_true",
                help="save each box's whole state first; `boxlite start` resumes it where it was",
            )

    p = sub.add_parser("exec", help="run a command in a running box; its exit code is ours")
    p.add_argument("box")
    _interactive_flags(p)
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-w", "--workdir", help="working directory in the box")
    p.add_argument("-u", "--user", help="uid[:gid] to run as")
    p.add_argument("--timeout", type=float, default=None, help="seconds before every process is killed (exit 124)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=exec_)

    p = sub.add_parser("cp", help="copy files between the host and a running box (BOX:/path)")
    p.add_argument("source", help="a host path, or BOX:/path")
    p.add_argument("dest", help="a host path, or BOX:/path")
    p.set_defaults(func=cp)

    p = sub.add_parser("rm", help="remove boxes")
    p.add_argument("boxes", nargs="+", metavar="BOX")
    p.add_argument("-f", "--force", action="store_true", help="stop a running box first")
    p.set_defaults(func=rm)

    sub.add_parser("ls", help="list every box: id, name, status, image").set_defaults(func=ls)
    p = sub.add_parser("ps", help="running boxes with uptime, memory and CPU (-a: every box)")
    p.add_argument("-a", "--all", action="store_true", help="stopped boxes too")
    p.set_defaults(func=ps)
    p = sub.add_parser("stats", help="resource use of running boxes (one snapshot)")
    p.add_argument("boxes", nargs="*", metavar="BOX")
    p.set_defaults(func=stats)
    p = sub.add_parser("inspect", help="boxes' details as JSON")
    p.add_argument("boxes", nargs="+", metavar="BOX")
    p.set_defaults(func=inspect)
    p = sub.add_parser("logs", help="a box's serial console (the kernel's and the agent's log)")
    p.add_argument("box")
    p.add_argument("-n", "--tail", type=int, default=None, help="only the last N lines")
    p.add_argument("--all", action="store_true", help="also QEMU's (vmm.log) and passt's logs")
    p.set_defaults(func=logs)
    # fork (issue 12)
    p = sub.add_parser("fork", help="new running boxes that continue from a running box's state; prints their ids")
    p.add_argument("box")
    p.add_argument("-n", "--count", type=int, default=1, help=f"how many forks (1 to {MAX_FORKS}, default 1)")
    p.set_defaults(func=fork)
