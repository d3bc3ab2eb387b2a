"""An execution's standard input (``ExecStdin``) and its output streams read as they arrive
(``ExecOutputStream``: lines, chunks, bounded reads), each call a future on the engine."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator

from .. import _bridge, _engine
from ..errors import OutputLimitError

#: Longest line :meth:`ExecOutputStream.readline` returns unless given a ``limit``.
DEFAULT_LINE_LIMIT = 1024 * 1024

#: Most bytes :meth:`ExecOutputStream.read` and :meth:`~ExecOutputStream.readexactly` return
#: unless given a ``limit``.
DEFAULT_READ_LIMIT = 64 * 1024 * 1024


class ExecStdin:
    """The standard input of an execution (``execution.stdin()``)."""

    def __init__(self, inner: _engine.Execution) -> None:
        self._inner = inner

    async def send_input(self, data: bytes | str) -> None:
        """Sends ``data`` (``str`` is encoded as UTF-8). Waits while the box has a window's
        worth of earlier input not yet delivered to the process."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await _bridge.call(lambda c: self._inner.write_stdin(c, payload))

    #: Alias of :meth:`send_input`.
    write = send_input

    async def close(self) -> None:
        """End of input for the process (``^D`` on a terminal)."""
        await _bridge.call(self._inner.close_stdin)


class ExecOutputStream:
    """One output stream of an execution, read as it arrives.

    ``async for line in stream`` yields text lines (newline kept, invalid UTF-8 replaced);
    :meth:`chunks` yields raw bytes as they come; :meth:`readline`, :meth:`readexactly` and
    :meth:`read` read bytes. Output read this way is not part of ``wait()``'s result, and only
    a bounded amount of it (about 1 MiB) is ever held on the host, however much the process
    writes: a process whose output nobody reads waits, as with a pipe. The reads that gather
    bytes (:meth:`readline`, :meth:`readexactly`, :meth:`read`) each take a ``limit`` and
    raise :class:`~boxlite.errors.OutputLimitError` rather than hold more.
    """

    def __init__(self, inner: _engine.Execution, name: str) -> None:
        self._inner = inner
        self._name = name
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        """Reads one more chunk into the buffer; False at the end of the stream."""
        if self._eof:
            return False
        chunk: bytes | None = await _bridge.call(lambda c: self._inner.read_output(c, self._name))
        if chunk is None:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw output chunks as they arrive."""
        while True:
            if self._buffer:
                data = bytes(self._buffer)
                self._buffer.clear()
                yield data
            if not await self._fill():
                return

    async def readline(self, limit: int = DEFAULT_LINE_LIMIT) -> bytes:
        """The next line, newline included; what is left without one at the end; ``b""`` at EOF.

        :class:`~boxlite.errors.OutputLimitError` when ``limit`` bytes arrive without a newline
        (they stay buffered: :meth:`chunks` or :meth:`readexactly` can still take them).
        """
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0 and end < limit:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if end >= 0 or len(self._buffer) > limit:
                raise OutputLimitError(
                    f"the {self._name} line is longer than readline's limit of {limit} bytes: "
                    "pass a larger limit=, or read chunks()"
                )
            searched = len(self._buffer)
            if not await self._fill():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    async def readexactly(self, n: int, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """Exactly ``n`` bytes; :class:`asyncio.IncompleteReadError` if the stream ends first.

        ``n`` often comes from the box (a length header): more than ``limit`` is refused with
        :class:`~boxlite.errors.OutputLimitError` before anything is read.
        """
        if n < 0 or n > limit:
            raise OutputLimitError(f"readexactly({n}) on {self._name}: use 0 to {limit} bytes (the limit= argument)")
        while len(self._buffer) < n:
            if not await self._fill():
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, n)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read(self, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """Everything up to the end of the stream; :class:`~boxlite.errors.OutputLimitError`
        once more than ``limit`` bytes arrived (read :meth:`chunks` for output of any size)."""
        while await self._fill():
            if len(self._buffer) > limit:
                raise OutputLimitError(
                    f"{self._name} holds more than read's limit of {limit} bytes: "
                    "pass a larger limit=, or read chunks()"
                )
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            line = await self.readline()
            if not line:
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
                return
            yield decoder.decode(line)


__all__ = ["DEFAULT_LINE_LIMIT", "DEFAULT_READ_LIMIT", "ExecOutputStream", "ExecStdin"]
