"""The engine's contract figures, read from their one definition in the engine.

Each is a constant of the extension module (``crates/bindings/src/contract.rs`` exports the
engine's own), so Python code uses these names and never repeats the numbers.
"""

from __future__ import annotations

from typing import Final

from . import _engine

#: Exit code of an execution killed by its timeout (as ``timeout(1)`` reports it); its
#: result also has ``timed_out=True``.
TIMEOUT_EXIT_CODE: Final[int] = _engine.TIMEOUT_EXIT_CODE

#: Exit code of an execution whose program was not found in the box (as a shell reports it).
EXIT_COMMAND_NOT_FOUND: Final[int] = _engine.EXIT_COMMAND_NOT_FOUND

#: Exit code of an execution whose program could not be started (not executable).
EXIT_CANNOT_EXECUTE: Final[int] = _engine.EXIT_CANNOT_EXECUTE

#: Seconds the box's agent has to confirm a kill (``kill()`` or a timeout's) before the box is
#: declared broken; ``wait()`` after a kill returns within about this long.
KILL_CONFIRM_TIMEOUT: Final[float] = _engine.KILL_CONFIRM_TIMEOUT

#: Bytes of each output stream a result keeps unless ``BoxOptions.max_output_bytes`` says otherwise.
DEFAULT_MAX_OUTPUT_BYTES: Final[int] = _engine.MAX_OUTPUT_BYTES_DEFAULT

#: Bytes one ``copy_out`` may write on the host unless ``BoxOptions.copy_out_max_bytes`` says otherwise.
DEFAULT_COPY_OUT_MAX_BYTES: Final[int] = _engine.COPY_OUT_MAX_BYTES_DEFAULT

__all__ = [
    "DEFAULT_COPY_OUT_MAX_BYTES",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "EXIT_CANNOT_EXECUTE",
    "EXIT_COMMAND_NOT_FOUND",
    "KILL_CONFIRM_TIMEOUT",
    "TIMEOUT_EXIT_CODE",
]
