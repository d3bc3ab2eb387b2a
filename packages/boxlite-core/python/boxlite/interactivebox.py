"""``InteractiveBox``: a :class:`~boxlite.SimpleBox` whose shell is attached to this process's
terminal, like ``docker exec -it``; and :func:`attach`, the attachment itself, which the
``boxlite shell``, ``boxlite run -it`` and ``boxlite exec -it`` commands use too.

async with boxlite.InteractiveBox(image="alpine:latest") as box:
    await box.wait()        # you type into the box's shell until it exits

On a terminal (``tty`` is detected from stdin unless given) the shell runs on a pseudo-terminal
in the box and the host terminal is in raw mode while attached: every key, Ctrl-C and Ctrl-D
included, goes to the box as a byte, the window size follows ``SIGWINCH``, and the terminal's
modes are put back on every way out (the shell's exit, an exception, a cancellation, the box
dying). Without a terminal, stdin, stdout and stderr are piped through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import termios
import threading
import tty as _tty
from collections.abc import Callable
from types import FrameType
from typing import Any

from typing_extensions import Unpack

from ._runtime.execution import Execution
from ._runtime.result import ExecResult
from .errors import BoxliteError, BoxStoppedError, HangupError, InvalidOptionError
from .simplebox import SimpleBox, SimpleBoxArgs

logger = logging.getLogger(__name__)

#: The shell an :class:`InteractiveBox` starts when none is given.
DEFAULT_SHELL = "/bin/sh"

#: Most bytes read from stdin, or written to the box, at once.
_CHUNK = 64 * 1024

#: How often the window size is checked where ``SIGWINCH`` cannot be caught (an event loop
#: outside the main thread, as the sync API's), in seconds.
_SIZE_POLL_INTERVAL = 0.5

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def _terminal_size(*fds: int) -> tuple[int, int] | None:
    """(rows, columns) of the first of ``fds`` that is a terminal, or None."""
    for fd in fds:
        if os.isatty(fd):
            try:
                size = os.get_terminal_size(fd)
            except OSError:
                continue
            if size.lines > 0 and size.columns > 0:
                return size.lines, size.columns
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Attachment:
    """One execution attached to this process's stdin, stdout and stderr.

    :meth:`begin` puts the terminal in raw mode (a TTY execution with stdin forwarded from a
    terminal) and sends the window size; :meth:`run` copies bytes both ways until the execution
    ends and returns its result; :meth:`end` (also run by :meth:`run` on every way out) puts the
    terminal's modes back and stops following its size. Use :func:`attach` for all three.
    """

    def __init__(
        self,
        execution: Execution,
        *,
        forward_stdin: bool = True,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
    ) -> None:
        self._execution = execution
        self._forward_stdin = forward_stdin
        self._stdin_fd, self._stdout_fd, self._stderr_fd = stdin_fd, stdout_fd, stderr_fd
        self._saved_modes: list[Any] | None = None
        self._previous_winch: _SignalHandler = None
        self._winch_installed = False
        self._poller: asyncio.Task[None] | None = None
        self._size: tuple[int, int] | None = None
        self._resizes: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_hup: _SignalHandler = None
        self._hup_installed = False
        self._hung_up = False
        self._runner: asyncio.Task[Any] | None = None

    @property
    def raw(self) -> bool:
        """The host terminal is in raw mode (until :meth:`end`)."""
        return self._saved_modes is not None

    async def begin(self) -> None:
        """Raw mode and the window size, for a TTY execution on a terminal; and the end of the
        session when the terminal hangs up."""
        self._loop = asyncio.get_running_loop()
        self._follow_hangup()
        if not self._execution.tty:
            return
        if self._forward_stdin and os.isatty(self._stdin_fd):
            self._saved_modes = termios.tcgetattr(self._stdin_fd)
            try:
                _tty.setraw(self._stdin_fd, termios.TCSANOW)
            except BaseException:
                self.end()
                raise
        try:
            self._size = _terminal_size(self._stdout_fd, self._stdin_fd)
            if self._size is None:
                return
            await self._execution.resize_tty(*self._size)
            self._follow_size()
        except BaseException:
            self.end()
            raise

    def _follow_hangup(self) -> None:
        """``SIGHUP`` (the terminal's window closed, an SSH connection dropped) would end this
        process at once by default, leaving the box's VM running: end the session instead, so
        every way out (the box's stop included) runs. Only the main thread can catch it."""
        loop = self._loop
        if loop is None or threading.current_thread() is not threading.main_thread():
            return
        self._previous_hup = signal.getsignal(signal.SIGHUP)
        try:
            loop.add_signal_handler(signal.SIGHUP, self._hang_up)
            self._hup_installed = True
        except (RuntimeError, ValueError, NotImplementedError):
            pass

    def _hang_up(self) -> None:
        logger.info("the terminal hung up (SIGHUP): ending the interactive session")
        self._hung_up = True
        if self._runner is not None:
            self._runner.cancel()

    def _follow_size(self) -> None:
        loop = self._loop
        assert loop is not None
        if threading.current_thread() is threading.main_thread():
            self._previous_winch = signal.getsignal(signal.SIGWINCH)
            try:
                loop.add_signal_handler(signal.SIGWINCH, self._size_changed)
                self._winch_installed = True
                return
            except (RuntimeError, ValueError, NotImplementedError):
                pass
        self._poller = loop.create_task(self._poll_size())

    async def _poll_size(self) -> None:
        while True:
            await asyncio.sleep(_SIZE_POLL_INTERVAL)
            self._size_changed()

    def _size_changed(self) -> None:
        size = _terminal_size(self._stdout_fd, self._stdin_fd)
        if size is None or size == self._size or self._loop is None:
            return
        self._size = size
        task = self._loop.create_task(self._resize(size))
        self._resizes.add(task)
        task.add_done_callback(self._resizes.discard)

    async def _resize(self, size: tuple[int, int]) -> None:
        try:
            await self._execution.resize_tty(*size)
        except BoxliteError as e:
            logger.debug("resizing the box's terminal to %s failed: %s", size, e)

    def end(self) -> None:
        """Puts the terminal's modes back and stops following its size and hang-up (idempotent)."""
        if self._hup_installed and self._loop is not None:
            self._hup_installed = False
            self._loop.remove_signal_handler(signal.SIGHUP)
            with contextlib.suppress(TypeError, ValueError, OSError):
                signal.signal(signal.SIGHUP, self._previous_hup)
        if self._winch_installed and self._loop is not None:
            self._winch_installed = False
            self._loop.remove_signal_handler(signal.SIGWINCH)
            with contextlib.suppress(TypeError, ValueError, OSError):
                signal.signal(signal.SIGWINCH, self._previous_winch)
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        for task in list(self._resizes):
            task.cancel()
        if self._saved_modes is not None:
            modes, self._saved_modes = self._saved_modes, None
            try:
                termios.tcsetattr(self._stdin_fd, termios.TCSADRAIN, modes)
            except termios.error as e:
                logger.warning("could not restore the terminal's modes: %s", e)

    async def _read_stdin(self) -> bytes:
        """The next bytes of stdin (``b""`` at its end), without blocking the event loop."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(self._stdin_fd, readable)
        except PermissionError:
            # A regular file (or /dev/null), which epoll refuses: its reads never wait.
            return await asyncio.to_thread(os.read, self._stdin_fd, _CHUNK)
        try:
            await ready
        finally:
            loop.remove_reader(self._stdin_fd)
        try:
            return os.read(self._stdin_fd, _CHUNK)
        except BlockingIOError:
            return await self._read_stdin()
        except OSError:  # EIO: the terminal hung up
            return b""

    async def _pump_stdin(self) -> None:
        stdin = self._execution.stdin()
        try:
            while data := await self._read_stdin():
                await stdin.send_input(data)
            await stdin.close()
        except BoxliteError as e:
            # The process ended or closed its input: what is left of ours has nowhere to go.
            logger.debug("stdin forwarding ended: %s", e)

    async def _pump_output(self, name: str, fd: int) -> None:
        reader = self._execution.stdout() if name == "stdout" else self._execution.stderr()
        async for chunk in reader.chunks():
            _write_all(fd, chunk)

    async def run(self) -> ExecResult:
        """Copies stdin to the execution and its output to stdout and stderr until it ends;
        its result. Cancelled, it kills the execution; the terminal is restored either way.
        When the terminal hangs up (``SIGHUP``) the same happens, and it raises
        :class:`~boxlite.errors.HangupError`."""
        tasks: list[asyncio.Future[None]] = []
        self._runner = asyncio.current_task()
        try:
            if self._hung_up:  # between begin() and here
                raise asyncio.CancelledError
            if self._forward_stdin:
                tasks.append(asyncio.ensure_future(self._pump_stdin()))
            else:
                await self._execution.stdin().close()
            pumps = [
                asyncio.ensure_future(self._pump_output("stdout", self._stdout_fd)),
                asyncio.ensure_future(self._pump_output("stderr", self._stderr_fd)),
            ]
            tasks += pumps
            await asyncio.gather(*pumps)
            return await self._execution.wait()
        except asyncio.CancelledError:
            self.end()
            with contextlib.suppress(BoxliteError):
                await self._execution.kill()
            if self._hung_up:
                # Not a cancellation any more: the caller gets the error, and its own awaits
                # (stopping the box) run normally.
                uncancel = getattr(self._runner, "uncancel", None)  # Python 3.11+
                if uncancel is not None:
                    uncancel()
                raise HangupError(
                    "the terminal hung up (SIGHUP): the session ended and its processes were killed"
                ) from None
            raise
        finally:
            # First of all: a second cancellation must not leave the terminal raw.
            self.end()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)


async def attach(execution: Execution, *, forward_stdin: bool = True) -> ExecResult:
    """Attaches ``execution`` to this process's stdin, stdout and stderr until it ends, and
    returns its result (as ``docker exec -i``, with ``-t`` when it was started with ``tty=True``).

    A TTY execution with stdin forwarded from a terminal gets raw mode and the window size, both
    undone on return, exception or cancellation; without ``forward_stdin`` its stdin is closed
    at once (it reads end of input). Cancelled, the execution is killed.
    """
    attachment = Attachment(execution, forward_stdin=forward_stdin)
    await attachment.begin()
    return await attachment.run()


class InteractiveBox(SimpleBox):
    """A box with a shell attached to your terminal: ``async with InteractiveBox(image=...) as
    box: await box.wait()``.

    Entering the box boots it, starts ``shell`` and attaches it to this process's stdin and
    stdout; :meth:`wait` returns when the shell exits (``exit``, Ctrl-D), after which
    :attr:`exit_code` holds its exit code. With ``tty=True`` (the default when stdin is a
    terminal) the shell runs on a pseudo-terminal in the box and the host terminal is in raw
    mode until the shell ends or the box is left, whichever comes first; with ``tty=False``
    stdin, stdout and stderr are piped through unchanged. :meth:`exec` runs other commands
    alongside, as on any :class:`~boxlite.SimpleBox`. Leaving the block while the shell runs
    ends it (the box is stopped).

    Other keyword arguments are :class:`~boxlite.SimpleBox`'s (``memory_mib``, ``cpus``,
    ``name``, ``auto_remove``, ``env``, ``volumes``, ...).
    """

    def __init__(
        self,
        image: str | None = None,
        shell: str = DEFAULT_SHELL,
        tty: bool | None = None,
        **options: Unpack[SimpleBoxArgs],
    ) -> None:
        super().__init__(image, **options)
        if not isinstance(shell, str) or not shell.strip():
            raise InvalidOptionError(
                f"InteractiveBox(shell=...) needs the path of a shell in the box, e.g. '/bin/sh'; got {shell!r}"
            )
        self._shell = shell
        self._tty = (sys.stdin is not None and sys.stdin.isatty()) if tty is None else bool(tty)
        self._session: asyncio.Task[ExecResult] | None = None
        self._attachment: Attachment | None = None
        self._result: ExecResult | None = None

    @property
    def shell(self) -> str:
        """The shell started in the box."""
        return self._shell

    @property
    def tty(self) -> bool:
        """The shell runs on a pseudo-terminal in the box (stdin was a terminal, or ``tty=True``)."""
        return self._tty

    @property
    def exit_code(self) -> int | None:
        """The shell's exit code once :meth:`wait` returned, else None."""
        return self._result.exit_code if self._result is not None else None

    async def start(self) -> InteractiveBox:
        """Boots the box (when not started), starts the shell and attaches it to this process's
        stdin and stdout."""
        await super().start()
        if self._session is None:
            try:
                execution = await self.box.exec(self._shell, tty=self._tty)
                self._attachment = Attachment(execution)
                await self._attachment.begin()
                self._session = asyncio.ensure_future(self._attachment.run())
            except BaseException:
                await self.shutdown()
                raise
        return self

    async def wait(self) -> None:
        """Waits until the shell exits (its exit code is then :attr:`exit_code`).

        Raises :class:`~boxlite.errors.BoxDiedError` when the box dies under the shell. If the
        waiting is cancelled, the shell is killed; the terminal is restored either way.
        """
        if self._session is None:
            raise BoxStoppedError("the interactive box is not started: use `async with` or `await box.start()` first")
        self._result = await self._session

    async def shutdown(self) -> None:
        """Ends the shell if it still runs (restoring the terminal), then stops the box."""
        session, self._session = self._session, None
        if session is not None:
            if not session.done():
                session.cancel()
            await asyncio.wait([session])
            if not session.cancelled() and session.exception() is not None:
                logger.debug("the interactive shell ended with %r", session.exception())
        if self._attachment is not None:
            self._attachment.end()
        await super().shutdown()

    async def __aenter__(self) -> InteractiveBox:
        return await self.start()


__all__ = ["DEFAULT_SHELL", "Attachment", "InteractiveBox", "attach"]
