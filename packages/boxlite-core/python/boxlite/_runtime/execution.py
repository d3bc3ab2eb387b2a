"""``Execution``: a process started with ``Box.exec``: its stdin and output streams, waiting
for its end, killing it, signals and the terminal size."""

from __future__ import annotations

import asyncio

from .. import _bridge, _engine
from .result import ExecResult
from .streams import ExecOutputStream, ExecStdin


class Execution:
    """A process started with :meth:`Box.exec`.

    Its stdin is open: take it with :meth:`stdin`; if you never do, :meth:`wait` closes it
    first, so a program reading stdin sees end-of-file.
    """

    def __init__(self, inner: _engine.Execution) -> None:
        self._inner = inner
        self._stdin: ExecStdin | None = None
        self._streams: dict[str, ExecOutputStream] = {}

    @property
    def id(self) -> int:
        return self._inner.id

    @property
    def tty(self) -> bool:
        """Started with ``tty=True`` (stdout then carries stderr too)."""
        return self._inner.tty

    def stdin(self) -> ExecStdin:
        """The process's standard input."""
        if self._stdin is None:
            self._inner.claim_stdin()
            self._stdin = ExecStdin(self._inner)
        return self._stdin

    def _stream(self, name: str) -> ExecOutputStream:
        if name not in self._streams:
            self._streams[name] = ExecOutputStream(self._inner, name)
        return self._streams[name]

    def stdout(self) -> ExecOutputStream:
        """Standard output as it arrives (see :class:`ExecOutputStream`)."""
        return self._stream("stdout")

    def stderr(self) -> ExecOutputStream:
        """Standard error as it arrives (empty for a TTY execution)."""
        return self._stream("stderr")

    async def wait(self) -> ExecResult:
        """Waits for the process to end and returns its exit code and the output not read
        through :meth:`stdout` / :meth:`stderr`.

        If the waiting is cancelled (``asyncio.wait_for`` timing out, a cancelled task), every
        process the execution started is killed before the cancellation propagates.
        """
        try:
            return ExecResult._from_engine(await _bridge.call(self._inner.wait))
        except asyncio.CancelledError:
            await _bridge.call(self._inner.kill)
            raise

    def set_deadline(self, seconds: float | None) -> bool:
        """From now, the execution's timeout is ``seconds`` (``None`` disarms it), in place of
        the ``timeout`` it was started with. When it runs out, the engine does what it does
        for that timeout: it kills every process the execution started, and :meth:`wait`
        returns a result with ``timed_out=True`` and exit code
        :data:`~boxlite.contract.TIMEOUT_EXIT_CODE`.

        ``seconds`` must be a positive, finite number
        (:class:`~boxlite.errors.InvalidOptionError` otherwise, checked by the engine as
        ``timeout`` is). Returns whether the execution was still running with its timeout not
        fired; ``False`` means this did nothing (for a disarm: the timeout fired first).
        """
        return self._inner.set_deadline(seconds)

    async def kill(self) -> None:
        """Kills every process the execution started (its cgroup in the guest), including
        descendants that left its process group or daemonised."""
        await _bridge.call(self._inner.kill)

    async def signal(self, signal: int) -> None:
        """Sends ``signal`` to the process group."""
        await _bridge.call(lambda c: self._inner.signal(c, signal))

    async def resize_tty(self, rows: int, cols: int) -> None:
        """Sets the terminal size of a ``tty=True`` execution (its programs get ``SIGWINCH``);
        :class:`~boxlite.errors.InvalidOptionError` for any other execution."""
        await _bridge.call(lambda c: self._inner.resize_tty(c, rows, cols))


__all__ = ["Execution"]
