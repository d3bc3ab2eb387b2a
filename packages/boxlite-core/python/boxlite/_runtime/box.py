"""``Box``: one VM with its own kernel: starting executions (``exec``, ``run``), metrics,
copying files in and out, start and stop; its file operations come from ``files.py``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .. import _bridge, _engine
from ..errors import InvalidOptionError
from ..options import normalize_args, normalize_env
from ..snapshots import SnapshotInfo
from .execution import Execution
from .files import FileOps
from .info import BoxInfo, BoxMetrics
from .result import ExecResult

if TYPE_CHECKING:
    from .runtime import Boxlite

#: The most forks one :meth:`Box.fork` makes.
MAX_FORKS = 64

#: Terminal size of a ``tty=True`` execution until it is resized (rows, columns).
DEFAULT_TTY_SIZE = (24, 80)


class Box(FileOps):
    """A box created by :meth:`Boxlite.create`: one VM with its own kernel."""

    def __init__(self, inner: _engine.Box, runtime: Boxlite) -> None:
        self._inner = inner
        self._runtime = runtime

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def name(self) -> str | None:
        return self._inner.name

    def info(self) -> BoxInfo:
        """A snapshot of the box's state."""
        return BoxInfo.model_validate_json(self._inner.info())

    async def exec(
        self,
        cmd: str,
        args: Sequence[str] | str | None = None,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        *,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        tty: bool = False,
        max_output_bytes: int | None = None,
    ) -> Execution:
        """Starts ``cmd`` with ``args`` in the box; ``await execution.wait()`` for the result,
        or read its :meth:`~Execution.stdout` / :meth:`~Execution.stderr` as they arrive.

        ``env`` adds to the box's and the image's environment. ``user`` is ``uid[:gid]``.
        With ``timeout`` (seconds), every process the execution started is killed once it runs
        longer, and ``wait()`` returns a result with ``timed_out=True`` and exit code 124.
        ``tty=True`` runs it on a pseudo-terminal (24x80 until :meth:`~Execution.resize_tty`).
        ``max_output_bytes`` caps each stream in ``wait()``'s result (default: the box's).
        """
        argv, pairs = normalize_args(args), normalize_env(env)
        size = DEFAULT_TTY_SIZE if tty else None
        inner = await _bridge.call(
            lambda c: self._inner.exec(
                c, str(cmd), argv, pairs, working_dir, user, True, timeout, size, False, max_output_bytes
            )
        )
        return Execution(inner)

    async def run(
        self,
        cmd: str,
        args: Sequence[str] | str | None = None,
        env: Mapping[str, str] | list[tuple[str, str]] | None = None,
        *,
        working_dir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        max_output_bytes: int | None = None,
    ) -> ExecResult:
        """Runs ``cmd`` to its end and returns its result: :meth:`exec` and ``wait()`` in one
        call, with stdin reading ``/dev/null``. A cancelled call kills the execution's processes.
        Each stream keeps at most ``max_output_bytes`` (default: the box's); see :class:`ExecResult`.
        """
        argv, pairs = normalize_args(args), normalize_env(env)
        output = await _bridge.call(
            lambda c: self._inner.exec(
                c, str(cmd), argv, pairs, working_dir, user, False, timeout, None, True, max_output_bytes
            )
        )
        return ExecResult._from_engine(output)

    async def metrics(self) -> BoxMetrics:
        """Resource use: guest memory and CPU, the VMM's host memory and CPU, executions, and
        the durations of the stages of the last start."""
        return BoxMetrics._from_json(await _bridge.call(self._inner.metrics))

    async def copy_in(self, host_path: str | os.PathLike[str], guest_path: str) -> None:
        """Copies a host file or directory tree into the box (as ``docker cp`` does: into
        ``guest_path`` when it is an existing directory, else as ``guest_path``), keeping modes."""
        source = os.fspath(host_path)
        await _bridge.call(lambda c: self._inner.copy_in(c, source, guest_path))

    async def copy_out(self, guest_path: str, host_path: str | os.PathLike[str]) -> None:
        """Copies a file or directory tree out of the box (into ``host_path`` when it is an
        existing directory, else as ``host_path``), keeping modes."""
        target = os.fspath(host_path)
        await _bridge.call(lambda c: self._inner.copy_out(c, guest_path, target))

    async def start(self, *, discard_state: bool = False) -> None:
        """Starts a stopped box again (a kept box keeps its files).

        A box stopped with ``keep_state=True`` (``info().hibernated``) is resumed from its saved
        state instead of booted: its processes, files and ``/tmp`` are where they were. The
        saved state is deleted as soon as the resumed guest runs (its disk moves on from there).
        With ``discard_state=True`` it is deleted first and the box boots from its disk (as after
        a power cut: what ran is lost).

        Raises:
            SnapshotError: the saved state must not run (damaged, or saved with another
                kernel, agent or QEMU); nothing was started. ``start(discard_state=True)`` or
                removing the box are the ways out.
        """
        await _bridge.call(lambda c: self._inner.start(c, discard_state))

    async def stop(self, *, keep_state: bool = False) -> None:
        """Shuts the guest down; with ``auto_remove`` the box's files are deleted too.

        With ``keep_state=True`` (hibernation) the box's whole state (memory and devices; the
        disk is its own) is saved into its directory and its VM ends; ``info().status`` is
        then ``"stopped"`` with ``info().hibernated`` set, and the next :meth:`start` (in this
        process or another, after ``runtime.get(id)``) resumes it where it was. Executions
        still running when it is saved go on in the resumed box, but their output goes to
        nobody. A paused box is saved as it is and runs when resumed; a hibernated box is left
        as it is.

        Raises:
            InvalidOptionError: the box has ``auto_remove=True`` (its files, saved state
                included, would be deleted as it stops); nothing was stopped.
            SnapshotError: the box has volumes (9p shares cannot be saved with the VM), or
                saving failed; nothing was stopped, the box runs on.
            BoxStoppedError: the box is not running (with ``keep_state=True``).
        """
        await _bridge.call(lambda c: self._inner.stop(c, keep_state))

    async def pause(self) -> None:
        """Freezes the box: its VM's vCPUs stop (``info().status`` is then ``"paused"``).

        Nothing runs in the guest while it is paused: running executions freeze where they are,
        and the box is not declared broken for not answering. An execution's ``timeout`` is host
        time and keeps counting: one that runs out during the pause kills the execution as soon
        as the box resumes (it then reports ``timed_out``). New executions, copies and file
        operations raise :class:`~boxlite.errors.BoxStoppedError` (naming :meth:`resume`) until
        the box is resumed; :meth:`stop` resumes it first. Pausing a paused box does nothing.

        Raises:
            BoxStoppedError: the box is not running.
        """
        await _bridge.call(self._inner.pause)

    async def resume(self) -> None:
        """Runs a paused box again, where it stopped. Resuming a running box does nothing.

        Raises:
            BoxStoppedError: the box is neither running nor paused.
        """
        await _bridge.call(self._inner.resume)

    async def snapshot(self, name: str | None = None) -> SnapshotInfo:
        """Saves the box's whole state (memory, devices and disk) as a snapshot named ``name``
        (default: its id), from which :meth:`Boxlite.restore` starts new boxes.

        The box is paused while its state is saved (a fraction of a second for a small box)
        and runs on afterwards where it was; a paused box stays paused. Its executions keep
        running; in a restored box they continue too, but their output goes to nobody.

        Raises:
            SnapshotError: the box has volumes (9p shares cannot be saved with the VM), or
                saving failed (the box is resumed and nothing is recorded).
            BoxliteConflictError: a snapshot with that name exists.
            BoxStoppedError: the box is not running.
        """
        payload = await _bridge.call(lambda c: self._inner.snapshot(c, name))
        return SnapshotInfo.model_validate_json(payload)

    async def fork(self, count: int = 1) -> list[Box]:
        """Starts ``count`` new boxes (1 to :data:`MAX_FORKS`) that continue from this box's
        current state: its memory, running processes and files, each with its own disk
        overlay, its own network and a new id. The box itself runs on.

        A fork has this box's options except its name (none) and its port forwards (none:
        this box keeps those host ports; restore a snapshot with ``ports=`` for a box that
        needs its own). Every fork's kernel is reseeded with fresh randomness from the host
        before it runs anything, so ``os.urandom``, ``uuid.uuid4()`` and a Python process
        started after the fork differ between forks; a process already running keeps its
        user-space generator's state (a ``random`` seeded before the fork repeats in every
        fork until it is reseeded).

        Forks are restored from a snapshot of this box (listed by ``runtime.snapshots`` with
        ``fork_of`` set), which is removed by the next ``fork()`` or ``runtime.remove()`` once
        no fork uses it.

        Raises:
            InvalidOptionError: ``count`` is not an integer from 1 to :data:`MAX_FORKS`.
            SnapshotError: the box has volumes (its state cannot be saved), or saving failed.
            BoxStoppedError: the box is not running.
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_FORKS:
            raise InvalidOptionError(
                f"fork count {count!r} is out of range: ask for 1 to {MAX_FORKS} forks at a time "
                "(call fork() again for more)"
            )
        forks = await _bridge.call(lambda c: self._runtime._inner.fork(c, self.id, count))
        return [Box(inner, self._runtime) for inner in forks]

    def __repr__(self) -> str:
        return f"<boxlite.Box id={self.id} status={self.info().status}>"


__all__ = ["DEFAULT_TTY_SIZE", "MAX_FORKS", "Box"]
