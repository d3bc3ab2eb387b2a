"""The watchdog of a node's actor: a process of its own session that kills the actor's VMs
(QEMU) once the actor is gone, however it went (``ray.kill``, a dead raylet, a driver that
exited, ``SIGKILL``).

The actor writes an ``add <pid> <start-time>`` line on the watchdog's stdin as each box boots;
when that pipe closes (the actor process ended and the kernel closed its end), the watchdog
kills every VMM still listed whose start time still matches (so a reused pid is never hit),
then exits. It runs as a script (no import of the library).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from typing import IO

logger = logging.getLogger("boxlite.ray")


def process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` (field 22 of ``/proc/<pid>/stat``), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return stat.rsplit(")", 1)[1].split()[19]


class Watchdog:
    """The actor's end of a watchdog process (see the module docs)."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            # Its own session: a signal to the actor's process group does not reach it.
            start_new_session=True,
            close_fds=True,
        )
        assert self._process.stdin is not None
        self._pipe: IO[bytes] = self._process.stdin

    def watch(self, pid: int) -> None:
        """Kill ``pid`` (a VMM) if the actor dies while it runs."""
        started = process_start_time(pid)
        if started is not None:
            self._send(f"add {pid} {started}\n")

    def _send(self, line: str) -> None:
        try:
            self._pipe.write(line.encode())
            self._pipe.flush()
        except OSError:
            logger.warning("the box watchdog of this node is gone: boxes may outlive a crash of this actor")

    def close(self) -> None:
        """Ends the watchdog (it kills whatever is still listed: nothing, after a clean close)."""
        with contextlib.suppress(OSError):
            self._pipe.close()
        self._process.wait(timeout=10)


def _main(lines: IO[bytes]) -> None:
    watched: dict[int, str] = {}
    for raw in lines:
        parts = raw.decode("ascii", "replace").split()
        if len(parts) == 3 and parts[0] == "add" and parts[1].isdigit():
            watched[int(parts[1])] = parts[2]
    for pid, started in watched.items():
        if process_start_time(pid) == started:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _main(sys.stdin.buffer)
