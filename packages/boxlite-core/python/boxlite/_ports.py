"""Host ports for the boxes that forward fixed guest services (BrowserBox's DevTools port,
ComputerBox's web desktop): free ones chosen for the caller, and a check of the ones it names.

A port forward is bound by the box's network process (passt) when the box boots; the engine
refuses a host port something already holds at that moment (``BoxliteConflictError``), but two
boxes of this process started close together could both see a port free before either passt
binds it. Hence the reservations here, made when a port is chosen or named (and naming the
option in the error): a port is *free* when a listener could bind it on 127.0.0.1 now and this
process has not handed it to another box in the last :data:`RESERVATION_SECONDS` (the time
between the choice and passt's bind, when the kernel does not know yet). A box gives its ports back on
shutdown (:func:`release_ports`); the reservation of a box stopped by someone else (a pool)
lapses by itself, and by then its forwarder has closed.
"""

from __future__ import annotations

import errno
import random
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import InvalidOptionError

#: Seconds a port handed to one box is not handed to another (a boot under emulation, with a
#: base disk to build first, can take this long before passt binds it).
RESERVATION_SECONDS = 300.0
#: Tries at a random port that is bindable and that this process has not reserved already.
_PICK_TRIES = 64
#: The lowest port handed out: below it live the well-known and registered services.
_LOWEST_PORT = 20000
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_lock = threading.Lock()
_reserved: dict[int, float] = {}


def _bindable(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:``port`` now (SO_REUSEADDR: closed connections
    lingering in TIME_WAIT do not count, only a live listener or bound socket does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


def _held(port: int, now: float) -> bool:
    until = _reserved.get(port)
    if until is None:
        return False
    if until <= now:
        del _reserved[port]
        return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections and ``bind(0)`` (Linux's default when unreadable)."""
    try:
        low, high = (int(field) for field in _EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _candidates() -> list[int]:
    """Ports to try, in random order, outside the kernel's ephemeral range: a port chosen there could be
    taken by any outgoing connection in the seconds before passt binds it; one outside it only by a
    listener."""
    low, high = _ephemeral_range()
    pool = [*range(_LOWEST_PORT, low), *range(high + 1, 65536)]
    if not pool:  # the whole range is ephemeral: nothing better than the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return [int(s.getsockname()[1])]
    return random.sample(pool, min(_PICK_TRIES, len(pool)))


def _pick(now: float) -> int:
    for port in _candidates():
        if not _held(port, now) and _bindable(port):
            return port
    raise OSError(errno.EADDRINUSE, "no free host port on 127.0.0.1 found")


def free_port() -> int:
    """A host port free now (bindable on 127.0.0.1, not reserved by a box of this process), not reserved:
    for a caller that will name it in an option, e.g. ``ComputerBox(gui_http_port=free_port())``."""
    with _lock:
        return _pick(time.monotonic())


def port_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 is neither bound on the host nor reserved by a box of this process."""
    with _lock:
        if _held(port, time.monotonic()):
            return False
    return _bindable(port)


def reserve_port(preferred: int | None = None) -> int:
    """A free host port, reserved for a box of this process: ``preferred`` if it is free, else
    a random free one outside the kernel's ephemeral range."""
    with _lock:
        now = time.monotonic()
        if preferred is not None and not _held(preferred, now) and _bindable(preferred):
            _reserved[preferred] = now + RESERVATION_SECONDS
            return preferred
        port = _pick(now)
        _reserved[port] = now + RESERVATION_SECONDS
        return port


def claim_port(port: int, *, owner: str, option: str) -> int:
    """Reserves the port a caller named (``option`` of ``owner``, for the message); raises
    :class:`~boxlite.errors.InvalidOptionError` naming it when it is taken."""
    with _lock:
        now = time.monotonic()
        if _held(port, now) or not _bindable(port):
            raise InvalidOptionError(
                f"{owner}({option}={port}): host port {port} on 127.0.0.1 is already in use (by another box "
                f"or program); pass another port, or leave {option} unset to get a free one"
            )
        _reserved[port] = now + RESERVATION_SECONDS
        return port


def release_ports(ports: Iterable[int]) -> None:
    """Gives ports back once the box that forwarded them has stopped."""
    with _lock:
        for port in ports:
            _reserved.pop(port, None)


__all__ = ["RESERVATION_SECONDS", "claim_port", "free_port", "port_free", "release_ports", "reserve_port"]
