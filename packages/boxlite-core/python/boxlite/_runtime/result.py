"""``ExecResult``: how an execution ended, with its output (what ``wait()`` and ``run()`` return)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import _engine


@dataclass(frozen=True)
class ExecResult:
    """How an execution ended, with its output.

    ``exit_code`` follows the shell convention: 128 + N when signal N killed the process,
    127 when the command was not found in the box, 126 when it could not be executed.
    Each stream keeps at most ``max_output_bytes`` (``BoxOptions``, or the call's); beyond
    that the output is read and dropped, ``truncated`` is true and ``stdout_dropped`` /
    ``stderr_dropped`` count the bytes dropped.
    """

    exit_code: int
    stdout: str
    stderr: str
    signal: int | None = None
    #: Why the process never started (exit codes 126 and 127), if it did not.
    error: str | None = None
    #: The timeout fired: every process the execution started was killed; ``exit_code`` is 124.
    timed_out: bool = False
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)
    #: Bytes of stdout / stderr dropped beyond the output limit.
    stdout_dropped: int = 0
    stderr_dropped: int = 0

    @property
    def truncated(self) -> bool:
        """Part of the output was dropped: a stream wrote more than the output limit."""
        return self.stdout_dropped > 0 or self.stderr_dropped > 0

    @property
    def returncode(self) -> int:
        """Alias of :attr:`exit_code` (as in :mod:`subprocess`)."""
        return self.exit_code

    @property
    def success(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def _from_engine(cls, output: _engine.ExecOutput) -> ExecResult:
        out, err = output.stdout, output.stderr
        return cls(
            exit_code=output.exit_code,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            signal=output.signal,
            error=output.error,
            timed_out=output.timed_out,
            stdout_bytes=out,
            stderr_bytes=err,
            stdout_dropped=output.stdout_dropped,
            stderr_dropped=output.stderr_dropped,
        )


__all__ = ["ExecResult"]
