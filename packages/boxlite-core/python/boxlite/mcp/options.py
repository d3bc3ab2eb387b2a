"""The server's options: command-line flags, each with an environment variable as its default.

A flag wins over its variable; ``--help`` lists both. :func:`parse_options` checks every value
and the one rule between them: listening on anything but loopback needs a bearer token.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..tools import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT

#: Where ``--http`` listens unless ``--host`` says otherwise.
DEFAULT_HOST = "127.0.0.1"

USAGE = """\
Serves BoxLite's agent tools over the Model Context Protocol: run Python (a fresh pooled box
per call, or a named persistent session), run shell commands, read, write and list files, and
create, list, stop and remove workspace boxes. Every box is a virtual machine.

stdio is the default transport (a desktop agent or an IDE starts the server itself);
--http PORT serves streamable HTTP on 127.0.0.1:PORT/mcp instead. Listening on any other
address (--host) needs a bearer token (--token or BOXLITE_MCP_TOKEN): the server refuses to
start without one. When the client disconnects, or on Ctrl-C or SIGTERM, every box the server
started is stopped.
"""


@dataclass(frozen=True)
class Volume:
    """A host directory shared into every box the server starts (read-only unless ``rw``)."""

    host: str
    guest: str
    mode: str = "ro"

    @classmethod
    def parse(cls, spec: str) -> Volume:
        """``HOST:GUEST`` or ``HOST:GUEST:ro|rw``; :class:`ValueError` naming the fix otherwise."""
        parts = spec.split(":")
        if len(parts) == 2:
            parts.append("ro")
        if len(parts) != 3 or not parts[0] or not parts[1] or parts[2] not in ("ro", "rw"):
            raise ValueError(f"volume {spec!r} must be HOST_DIR:GUEST_PATH or HOST_DIR:GUEST_PATH:ro|rw")
        host = Path(parts[0]).expanduser().resolve()
        if not host.is_dir():
            raise ValueError(f"volume {spec!r}: {host} is not a directory on this host")
        if not parts[1].startswith("/"):
            raise ValueError(f"volume {spec!r}: the path in the box, {parts[1]!r}, must be absolute")
        return cls(str(host), parts[1], parts[2])


@dataclass(frozen=True)
class McpOptions:
    """What ``boxlite mcp`` was asked for (see ``--help``)."""

    #: The image of every box: a reference or an OCI layout path (None: the tools' default).
    image: str | None = None
    memory_mib: int = 1024
    cpus: int = 1
    #: Most pooled boxes at once (stateless calls).
    pool_size: int = 4
    #: Pooled boxes kept booted, with a warm interpreter, ahead of calls.
    warm: int = 1
    #: Stateless calls a pooled box serves before it is destroyed (1: a fresh box every call).
    max_uses: int = 1
    #: Most workspace boxes (named sessions and created boxes) one client may hold.
    max_workspaces: int = 8
    network: bool = True
    volumes: tuple[Volume, ...] = ()
    #: Seconds a call may run when the model gives no timeout.
    timeout: float = DEFAULT_TIMEOUT
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    #: Streamable HTTP on this port; None: stdio.
    http_port: int | None = None
    host: str = DEFAULT_HOST
    token: str | None = field(default=None, repr=False)
    #: The runtime's home (None: ``BOXLITE_HOME`` or ``~/.boxlite``).
    home: str | None = None
    #: Stateless calls on a Ray cluster: its address (``auto``: the one this machine is part of).
    ray: str | None = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _env_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "on", "true", "yes"):
        return True
    if lowered in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{name}={value!r} must be on or off")


def parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The ``boxlite mcp`` argument parser; defaults come from ``env`` (``os.environ``)."""
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(
        prog="boxlite mcp", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def add(flag: str, var: str, help: str, **kwargs: object) -> None:
        p.add_argument(flag, default=env.get(var), help=f"{help} [env {var}]", **kwargs)  # type: ignore[arg-type]

    add("--image", "BOXLITE_MCP_IMAGE", "image of every box: a reference or an OCI layout path (default: python:slim)")
    add("--memory", "BOXLITE_MCP_MEMORY", "guest memory of each box in MiB (default 1024)", metavar="MIB")
    add("--cpus", "BOXLITE_MCP_CPUS", "virtual CPUs of each box (default 1)", metavar="N")
    add(
        "--pool-size", "BOXLITE_MCP_POOL_SIZE", "most pooled boxes at once for stateless calls (default 4)", metavar="N"
    )
    add("--warm", "BOXLITE_MCP_WARM", "pooled boxes kept booted ahead of calls (default 1)", metavar="N")
    add(
        "--max-uses",
        "BOXLITE_MCP_MAX_USES",
        "stateless calls a pooled box serves before it is destroyed (default 1: a fresh box every call; "
        "more reuses boxes, whose Python state is still fresh but whose files persist)",
        metavar="N",
    )
    add(
        "--max-workspaces",
        "BOXLITE_MCP_MAX_WORKSPACES",
        "most named sessions and created boxes per client (default 8)",
        metavar="N",
    )
    add("--network", "BOXLITE_MCP_NETWORK", "outbound network of the boxes: on or off (default on)", metavar="on|off")
    p.add_argument(
        "--volume",
        "-v",
        action="append",
        default=None,
        metavar="HOST:GUEST[:ro|rw]",
        help="share a host directory into every box, read-only unless :rw is given; repeatable "
        "[env BOXLITE_MCP_VOLUMES, comma-separated]",
    )
    add("--timeout", "BOXLITE_MCP_TIMEOUT", f"seconds a call may run by default (default {DEFAULT_TIMEOUT:g})")
    add(
        "--max-output-chars",
        "BOXLITE_MCP_MAX_OUTPUT_CHARS",
        f"characters of stdout and of stderr a result keeps (default {DEFAULT_MAX_OUTPUT_CHARS})",
        metavar="N",
    )
    add("--http", "BOXLITE_MCP_HTTP", "serve streamable HTTP on this port instead of stdio", metavar="PORT")
    add("--host", "BOXLITE_MCP_HOST", f"address --http listens on (default {DEFAULT_HOST})")
    add("--token", "BOXLITE_MCP_TOKEN", "bearer token HTTP clients must send (required off loopback)")
    add("--home", "BOXLITE_HOME", "the runtime's home directory (default ~/.boxlite)", metavar="DIR")
    add(
        "--ray",
        "BOXLITE_MCP_RAY",
        "run stateless calls on boxes spread over a Ray cluster (boxlite.ray.RayBoxPool): its address, or auto; "
        "--pool-size and --warm then count per node, and workspaces stay on this machine",
        metavar="ADDRESS",
    )
    return p


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} must be a whole number") from None
    if not low <= number <= high:
        raise ValueError(f"{name} {number} must be between {low} and {high}")
    return number


def parse_options(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> McpOptions:
    """The options from ``argv`` and ``env``; :class:`ValueError` naming the problem and the fix
    (``argparse`` exits on an unknown flag)."""
    env = os.environ if env is None else env
    args = parser(env).parse_args(argv)
    volume_specs: list[str] = args.volume or [v for v in env.get("BOXLITE_MCP_VOLUMES", "").split(",") if v.strip()]
    timeout_text = args.timeout
    try:
        timeout = float(timeout_text) if timeout_text else DEFAULT_TIMEOUT
    except ValueError:
        raise ValueError(f"--timeout {timeout_text!r} must be a number of seconds") from None
    if not 0 < timeout < float("inf"):
        raise ValueError(f"--timeout {timeout_text!r} must be a positive number of seconds")
    pool_size = _int(args.pool_size, "--pool-size", 4, 1, 256)
    options = McpOptions(
        image=args.image or None,
        memory_mib=_int(args.memory, "--memory", 1024, 128, 65536),
        cpus=_int(args.cpus, "--cpus", 1, 1, 256),
        pool_size=pool_size,
        warm=_int(args.warm, "--warm", min(1, pool_size), 0, pool_size),
        max_uses=_int(args.max_uses, "--max-uses", 1, 1, 1_000_000_000),
        max_workspaces=_int(args.max_workspaces, "--max-workspaces", 8, 0, 1024),
        network=_env_bool(args.network, "--network") if args.network else True,
        volumes=tuple(Volume.parse(spec.strip()) for spec in volume_specs),
        timeout=timeout,
        max_output_chars=_int(args.max_output_chars, "--max-output-chars", DEFAULT_MAX_OUTPUT_CHARS, 100, 10_000_000),
        http_port=_int(args.http, "--http", 0, 1, 65535) if args.http else None,
        host=args.host or DEFAULT_HOST,
        token=args.token or None,
        home=args.home or None,
        ray=args.ray or None,
    )
    if options.http_port is None and args.host:
        raise ValueError("--host applies to --http only: add --http PORT, or drop --host")
    if options.http_port is not None and not is_loopback(options.host) and not options.token:
        raise ValueError(
            f"refusing to listen on {options.host}, which is not loopback, without a bearer token: "
            "pass --token TOKEN (or set BOXLITE_MCP_TOKEN), or listen on 127.0.0.1"
        )
    return options


__all__ = ["DEFAULT_HOST", "McpOptions", "Volume", "is_loopback", "parse_options", "parser"]
