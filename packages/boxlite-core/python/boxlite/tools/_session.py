"""The warm interpreter session: one Python server (``_interpreter.py``) kept running in a box.

Requests and answers are framed on the server's stdin and stdout: ``RUN <nonce> <size>`` then
the code; ``DONE <nonce> <size>`` then a JSON answer; ``PING``/``PONG`` for health checks. Every
request carries a fresh random nonce that its answer must repeat, every line and size the box
announces is bounded (``MAX_*``), and any violation stops the interpreter; a persistent one is
started anew on the next call, and the result says so. :class:`_InterpreterSession` holds this
half of :class:`~boxlite.tools.BoxSandbox` (``run_python``); shell and file operations are in
``_sandbox.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from importlib import resources
from typing import Any

from typing_extensions import Self

from ..contract import EXIT_COMMAND_NOT_FOUND, TIMEOUT_EXIT_CODE
from ..errors import BoxliteError
from ..runtime import Box, ExecOutputStream, ExecResult, ExecStdin, Execution
from .result import DEFAULT_MAX_OUTPUT_CHARS, ImageOutput, ToolResult, truncate_output
from .schemas import call_timeout

logger = logging.getLogger("boxlite.tools")

#: Seconds a tool call may run when the caller gives no timeout.
DEFAULT_TIMEOUT = 60.0
#: Seconds the warm interpreter may take to start (a cold Python under emulation is slow).
INTERPRETER_START_TIMEOUT = 120.0
#: Seconds a health check waits for the interpreter's answer.
PING_TIMEOUT = 10.0
#: Where images written by the code are collected from, in the box.
DEFAULT_OUTPUT_DIR = "/output"
#: Where the interpreters keep their pid file and each call's output files, in the box.
SESSION_ROOT = "/tmp/.boxlite-tools"
#: The most images one call returns, and the largest one collected (bytes).
MAX_IMAGES = 10
MAX_IMAGE_BYTES = 16 * 1024 * 1024
#: The most image bytes one call returns, all images together.
MAX_TOTAL_IMAGE_BYTES = 32 * 1024 * 1024
#: The longest protocol line the interpreter may send (``READY``, ``PONG``, an answer's header).
MAX_HEADER_BYTES = 256


#: The bridge to an interpreter serving on named pipes (``sh -c _BRIDGE bridge DIR``): it moves
#: the interpreter's processes into its own execution's cgroup (and fails unless all of them
#: moved), then copies its stdin to ``DIR/req`` and ``DIR/resp`` to its stdout. The interpreter
#: wrote ``READY`` into ``DIR/resp`` when it started: the first line the host reads. Shell
#: builtins but for the two ``cat``: a process start costs tens of ms in a just-restored box
#: (TCG translates all code afresh).
_BRIDGE = """\
set -e
dir=$1
read -r pid < "$dir/pid" || true  # written without a newline
kill -0 "$pid"
IFS=: read -r _ _ old < "/proc/$pid/cgroup"
IFS=: read -r _ _ new < /proc/self/cgroup
old=/sys/fs/cgroup$old new=/sys/fs/cgroup$new
case $new in
*/boxlite-execs/*) ;;
*) echo "this execution has no cgroup of its own: the interpreter cannot be put under it" >&2; exit 1 ;;
esac
n=0
while read -r p < "$old/cgroup.procs"; do
    n=$((n + 1))
    if [ "$n" -gt 64 ]; then echo "the interpreter's processes could not be moved" >&2; exit 1; fi
    echo "$p" > "$new/cgroup.procs" 2>/dev/null || true
done
cat "$dir/resp" &
exec cat > "$dir/req"
"""


class ToolSandboxError(BoxliteError):
    """The sandbox itself failed (the box or its interpreter), not the code it ran."""


class _ProtocolViolation(Exception):
    """The interpreter sent something the protocol does not allow (too long, malformed, or not
    the answer to the request in flight): the box is not to be trusted with another call."""


_HEADER = re.compile(rb"(DONE|PONG) ([0-9a-f]{1,64})(?: ([0-9]{1,20}))?\n")


def _max_answer_bytes(byte_cap: int) -> int:
    """The largest answer the interpreter can honestly send: two capped streams as JSON text
    (an escape takes at most 6 bytes per byte), the images in base64, and room for the rest."""
    images = MAX_TOTAL_IMAGE_BYTES * 4 // 3 + 4 + MAX_IMAGES * (4096 + 64)
    return 2 * 6 * byte_cap + images + 4096


def _parse_answer(payload: bytes, byte_cap: int) -> dict[str, Any]:
    """The interpreter's JSON answer, checked field by field."""
    try:
        answer = json.loads(payload)
    except ValueError as e:
        raise _ProtocolViolation(f"its answer is not JSON ({e})") from None
    fields = {"exit_code": int, "stdout": str, "stdout_size": int, "stderr": str, "stderr_size": int, "images": list}
    if not isinstance(answer, dict) or set(answer) != set(fields):
        raise _ProtocolViolation(f"its answer does not have the fields {sorted(fields)}")
    for name, kind in fields.items():
        value = answer[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _ProtocolViolation(f"its answer's {name} is not {kind.__name__}")
    if not 0 <= answer["exit_code"] <= 255 or answer["stdout_size"] < 0 or answer["stderr_size"] < 0:
        raise _ProtocolViolation("its answer has an exit code or a size out of range")
    if len(answer["stdout"]) > byte_cap or len(answer["stderr"]) > byte_cap:
        raise _ProtocolViolation(f"its answer carries more than the {byte_cap} bytes of output asked for")
    if len(answer["images"]) > MAX_IMAGES:
        raise _ProtocolViolation(f"its answer has more than {MAX_IMAGES} images")
    images = []
    for image in answer["images"]:
        if not (isinstance(image, dict) and isinstance(image.get("path"), str) and isinstance(image.get("data"), str)):
            raise _ProtocolViolation("its answer has an image without a path or data")
        try:
            data = base64.b64decode(image["data"], validate=True)
        except ValueError:
            raise _ProtocolViolation("its answer has an image that is not base64") from None
        images.append(ImageOutput(path=image["path"][:4096], data=data))
    answer["images"] = tuple(images)
    return answer


def interpreter_source() -> str:
    """The program of the warm interpreter that runs in the box."""
    return resources.files(__package__).joinpath("_interpreter.py").read_text()


def _check_limits(max_output_chars: int, default_timeout: float) -> None:
    if max_output_chars < 100:
        raise ValueError(f"max_output_chars={max_output_chars} is too small to be useful: use at least 100")
    try:
        call_timeout(default_timeout, 0.0)
    except ValueError:
        raise ValueError(f"default_timeout={default_timeout} must be a positive number of seconds") from None


class _InterpreterSession:
    """The warm interpreter of a :class:`~boxlite.tools.BoxSandbox` and ``run_python`` on it
    (the sandbox's other operations, and its documentation, are in ``_sandbox.py``)."""

    def __init__(
        self,
        box: Box,
        *,
        persistent: bool = False,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        default_timeout: float = DEFAULT_TIMEOUT,
        output_dir: str = DEFAULT_OUTPUT_DIR,
        env: Mapping[str, str] | None = None,
    ) -> None:
        _check_limits(max_output_chars, default_timeout)
        self.box = box
        self.persistent = persistent
        self.max_output_chars = max_output_chars
        self.default_timeout = default_timeout
        self.output_dir = output_dir
        self._env = {"MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "BOXLITE_OUTPUT_DIR": output_dir}
        self._env.update(env or {})
        self._session_dir = f"{SESSION_ROOT}/{uuid.uuid4().hex[:12]}"
        self._interpreter: Execution | None = None
        # The interpreter started for a snapshot (start_for_snapshot), killed by close().
        self._detached: Execution | None = None
        self._requests: ExecStdin | None = None
        self._answers: ExecOutputStream | None = None
        # Bytes of each stream the interpreter sends back: enough for the head and the tail.
        self._byte_cap = max_output_chars * 4
        self._lock = asyncio.Lock()
        self._restarted_note: str | None = None

    # -- the warm interpreter ------------------------------------------------------------

    @property
    def interpreter_running(self) -> bool:
        """Whether an interpreter was started and not (knowingly) lost since."""
        return self._interpreter is not None

    async def start(self) -> Self:
        """Starts the warm interpreter now (it is otherwise started by the first call)."""
        async with self._lock:
            await self._ensure_interpreter()
        return self

    async def _ensure_interpreter(self) -> None:
        if self._interpreter is not None:
            return
        execution, stdout = await self._launch("stdio")
        self._interpreter = execution
        self._requests, self._answers = execution.stdin(), stdout
        logger.debug("warm interpreter ready in box %s", self.box.id)

    async def _launch(self, channel: str) -> tuple[Execution, ExecOutputStream]:
        """Starts the interpreter program serving on ``channel`` (``stdio`` or ``fifo``, see
        ``_interpreter.py``) and waits until it is ready."""
        mode = "persistent" if self.persistent else "fresh"
        limits = (self._byte_cap, MAX_IMAGES, MAX_IMAGE_BYTES, MAX_TOTAL_IMAGE_BYTES)
        args = [self._session_dir, mode, self.output_dir, *map(str, limits), channel]
        # The engine bounds the start: past INTERPRETER_START_TIMEOUT it kills the interpreter,
        # which ends its output; the deadline is disarmed once the interpreter is ready.
        execution = await self.box.exec(
            "python3", ["-u", "-c", interpreter_source(), *args], self._env, timeout=INTERPRETER_START_TIMEOUT
        )
        stdout = execution.stdout()
        await self._await_ready(execution, stdout, "the Python interpreter did not start")
        return execution, stdout

    async def _await_ready(self, execution: Execution, stdout: ExecOutputStream, failure: str) -> None:
        """Reads the ``READY`` line and disarms the start deadline; otherwise kills the
        execution and raises :class:`ToolSandboxError` starting with ``failure``."""
        try:
            ready = await stdout.readline(MAX_HEADER_BYTES)
        except ValueError:
            ready = b""
        if ready == b"READY\n" and execution.set_deadline(None):
            return
        await execution.kill()
        ended = await execution.wait()
        if ended.exit_code == EXIT_COMMAND_NOT_FOUND:
            raise ToolSandboxError(
                "this image has no python3: use an image with Python (e.g. python:slim, the default)"
            )
        raise ToolSandboxError(
            f"{failure} within {INTERPRETER_START_TIMEOUT:g} s "
            f"(exit code {ended.exit_code}): {ended.stderr.strip()[-2000:] or ended.error or 'no output'}"
        )

    # -- across a snapshot -------------------------------------------------------------------
    #
    # A pool that refills from a snapshot (BoxPool(from_snapshot=True)) starts the interpreter
    # in the box it snapshots, serving on named pipes, and attaches to it in every restored box
    # through a bridge execution: a restored box has a new host connection, and the execution
    # that started the interpreter has no host side any more. Measured under TCG
    # (benchmarks/bench_snapshot_pool.py, p50): starting an interpreter in a restored box takes
    # 0.9-1.4 s (python3 and its imports under emulation, even with its files in the page cache);
    # attaching to the one already running about 0.22-0.25 s, mostly the first process start
    # after the restore (the emulator translates code afresh), less in a pool, which runs one
    # exec in each restored box before its prepare. A call then costs about 1-2 ms more than on
    # an interpreter started by its own execution (two `cat` on the way). Keeping the one from
    # the snapshot is what makes a restored box cheap. The bridge first moves the interpreter's
    # processes into its own cgroup, so the engine's kill of the bridge at a call's deadline
    # kills them too, and everything the code started: the timeout contract holds as for an
    # interpreter started by its execution (tests/test_snapshot_pool.py checks it). The box the
    # snapshot was taken of attaches the same way (its own execution of the interpreter stays
    # open, with no processes left in it).

    async def start_for_snapshot(self) -> str:
        """Starts a warm interpreter that serves on named pipes in the box, so that every box
        restored from a snapshot of this one has it running, ready for :meth:`attach`.
        Returns its session directory (what :meth:`attach` takes). This sandbox does not use it:
        the box is meant to be snapshotted and stopped."""
        async with self._lock:
            execution, _ = await self._launch("fifo")
            self._detached = execution
        logger.debug("warm interpreter for a snapshot ready in box %s", self.box.id)
        return self._session_dir

    async def attach(self, session_dir: str) -> Self:
        """Takes over the interpreter that :meth:`start_for_snapshot` started in the box this
        one was restored from (``session_dir`` is what it returned).

        Raises:
            ToolSandboxError: no such interpreter answers, or its processes could not be put
                under the bridge execution (which a call's timeout kills).
        """
        async with self._lock:
            if self._interpreter is not None:
                raise ToolSandboxError("this sandbox has an interpreter already: attach a new BoxSandbox")
            self._session_dir = session_dir
            execution = await self.box.exec(
                "sh", ["-c", _BRIDGE, "bridge", session_dir], timeout=INTERPRETER_START_TIMEOUT
            )
            stdout = execution.stdout()
            await self._await_ready(execution, stdout, "could not attach to the warm interpreter of the snapshot")
            self._interpreter = execution
            self._requests, self._answers = execution.stdin(), stdout
        logger.debug("attached to the warm interpreter in box %s", self.box.id)
        return self

    def _forget_interpreter(self) -> Execution | None:
        """Drops the interpreter (the next call starts a new one); returns it."""
        execution, self._interpreter = self._interpreter, None
        self._requests = self._answers = None
        return execution

    async def _discard_interpreter(self) -> ExecResult | None:
        """Kills the interpreter and everything it started; returns how it ended."""
        execution = self._forget_interpreter()
        if execution is None:
            return None
        return await self._kill(execution)

    async def _kill(self, execution: Execution) -> ExecResult | None:
        """Kills a (forgotten) interpreter and everything it started; returns how it ended."""
        try:
            await execution.kill()
            return await execution.wait()
        except BoxliteError:
            logger.warning("could not kill the interpreter in box %s", self.box.id, exc_info=True)
            return None

    async def is_healthy(self) -> bool:
        """Whether the interpreter answers a ping within :data:`PING_TIMEOUT` (a round trip of
        about a millisecond; no process is started). A box without one is checked with ``true``.
        An interpreter that does not answer in time, or answers anything but the pong asked
        for, is stopped."""
        async with self._lock:
            if self._interpreter is None:
                try:
                    return (await self.box.run("true", timeout=PING_TIMEOUT)).exit_code == 0
                except BoxliteError:
                    return False
            try:
                # Bounded here, not by an engine deadline: a ping is a health check of an idle
                # interpreter, not code running under a tool call's timeout, and one that fails
                # it is killed with everything it started right below anyway.
                await asyncio.wait_for(self._ping(), PING_TIMEOUT)
                return True
            except (asyncio.TimeoutError, EOFError, BoxliteError, _ProtocolViolation) as e:
                why = str(e) or f"no answer within {PING_TIMEOUT:g} s"
                logger.warning("the interpreter in box %s failed its health check: %s", self.box.id, why)
                await self._discard_interpreter()
                return False

    async def _ping(self) -> None:
        assert self._requests is not None
        nonce = secrets.token_hex(16)
        await self._requests.send_input(b"PING %s\n" % nonce.encode())
        kind, answered, _ = await self._read_header()
        if (kind, answered) != (b"PONG", nonce):
            raise _ProtocolViolation(f"it answered {kind.decode()} {answered} to PING {nonce}")

    async def _read_header(self) -> tuple[bytes, str, int | None]:
        """The interpreter's next protocol line: kind, nonce and payload size (``DONE`` only).
        Raises :class:`EOFError` when the interpreter is gone."""
        assert self._answers is not None
        try:
            line = await self._answers.readline(MAX_HEADER_BYTES)
        except ValueError as e:
            raise _ProtocolViolation(str(e)) from None
        if not line:
            raise EOFError
        match = _HEADER.fullmatch(line)
        if match is None:
            raise _ProtocolViolation(f"it sent {line[:80]!r} where an answer header was expected")
        kind, nonce, size = match.groups()
        if (kind == b"DONE") != (size is not None):
            raise _ProtocolViolation(f"it sent a malformed header {line[:80]!r}")
        return kind, nonce.decode(), int(size) if size is not None else None

    # -- tool operations -------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        return call_timeout(timeout, self.default_timeout)

    def _cap(
        self, stdout: str, stderr: str, out_total: int | None = None, err_total: int | None = None
    ) -> dict[str, Any]:
        out, out_dropped = truncate_output(stdout, self.max_output_chars, total_chars=out_total)
        err, err_dropped = truncate_output(stderr, self.max_output_chars, total_chars=err_total)
        return {"stdout": out, "stderr": err, "stdout_truncated": out_dropped, "stderr_truncated": err_dropped}

    async def run_python(self, code: str, timeout: float | None = None) -> ToolResult:
        """Runs ``code`` and returns its exit code, capped output and images.

        Like a notebook cell, the value of a final expression is printed. Code that fails
        (an exception, ``sys.exit(3)``) is an ordinary result; :class:`ToolSandboxError` means
        the sandbox itself failed.
        """
        seconds = self._timeout(timeout)
        async with self._lock:
            await self._ensure_interpreter()
            note, self._restarted_note = self._restarted_note, None
            try:
                answer = await self._exchange(code.encode(), seconds)
            except _ProtocolViolation as e:
                await self._discard_interpreter()
                if self.persistent:
                    self._restarted_note = "the Python session was restarted: variables from earlier calls are gone"
                raise ToolSandboxError(
                    f"the Python interpreter in box {self.box.id} broke the tool protocol ({e}); it was stopped "
                    "and the next call starts a new one (code that writes to the interpreter's own channel does this)"
                ) from None
            except BaseException:
                # Cancelled mid-request (or the channel failed): the interpreter's answer would
                # reach the next caller, so it goes, with everything it started.
                await self._discard_interpreter()
                if self.persistent:
                    self._restarted_note = (
                        "the Python session was restarted (a call was cancelled): variables from earlier calls are gone"
                    )
                raise
            if answer is None:
                return await self._no_answer(seconds, note)
            out, err = answer["stdout"], answer["stderr"]
            return ToolResult(
                exit_code=answer["exit_code"],
                timeout=seconds,
                images=answer["images"],
                note=note,
                **self._cap(
                    out,
                    err,
                    # What never left the box counts as dropped (bytes ~ characters).
                    out_total=len(out) + max(0, answer["stdout_size"] - len(out.encode())),
                    err_total=len(err) + max(0, answer["stderr_size"] - len(err.encode())),
                ),
            )

    async def _exchange(self, code: bytes, seconds: float) -> dict[str, Any] | None:
        """Sends one request to the interpreter and reads its answer (None: none came).

        The engine enforces the call's timeout: the interpreter's execution has a deadline
        ``seconds`` from the request, at which the engine kills the interpreter and everything
        it started (which ends its output: no answer). The deadline is disarmed once the answer
        is read.

        Every request carries a fresh random nonce that its answer must repeat, and every size
        the interpreter announces is checked against what it may honestly send, so anything
        written into the channel by other means is refused (:class:`_ProtocolViolation`)."""
        assert self._interpreter is not None and self._requests is not None and self._answers is not None
        interpreter = self._interpreter
        nonce = secrets.token_hex(16)
        interpreter.set_deadline(seconds)
        await self._requests.send_input(b"RUN %s %d\n" % (nonce.encode(), len(code)) + code)
        try:
            kind, answered, size = await self._read_header()
        except EOFError:
            return None
        limit = _max_answer_bytes(self._byte_cap)
        if kind != b"DONE" or size is None:
            raise _ProtocolViolation(f"it sent {kind.decode()} where an answer was expected")
        if size > limit:
            raise _ProtocolViolation(f"its answer announces {size} bytes, more than the limit of {limit} bytes")
        if answered != nonce:
            raise _ProtocolViolation(f"its answer is for request {answered}, not for request {nonce}")
        try:
            payload = await self._answers.readexactly(size)
        except asyncio.IncompleteReadError:
            return None
        if not interpreter.set_deadline(None):
            # The deadline passed just as the answer arrived: the answer stands, but the engine
            # is stopping the interpreter, so the next call starts a new one.
            await self._discard_interpreter()
            if self.persistent:
                self._restarted_note = (
                    "the Python session was restarted after a timeout: variables from earlier calls are gone"
                )
        return _parse_answer(payload, self._byte_cap)

    async def _no_answer(self, seconds: float, note: str | None) -> ToolResult:
        """The result of a call whose answer never came: the engine stopped the interpreter at
        the call's deadline (a timeout), or the interpreter died (killed, crashed, out of
        memory). Either way the next call starts a new one."""
        execution = self._forget_interpreter()
        assert execution is not None
        try:
            # Bounded: the call's deadline is still armed, so the engine ends the execution at
            # the latest then (and has its kill confirmed within KILL_CONFIRM_TIMEOUT).
            ended: ExecResult | None = await execution.wait()
        except BoxliteError:
            ended = None
        if ended is not None and ended.timed_out:
            # The engine killed the interpreter and everything it started.
            return await self._timed_out(seconds, note)
        if self.persistent:
            self._restarted_note = "the Python session was restarted: variables from earlier calls are gone"
        # Whatever the dead interpreter left running goes too.
        await self._kill(execution)
        stdout, stderr = await self._partial_output()
        return ToolResult(
            exit_code=ended.exit_code if ended is not None else 1,
            timeout=seconds,
            note="the Python interpreter died during this call; the next call starts a new one",
            **self._cap(stdout, stderr),
        )

    async def _partial_output(self) -> tuple[str, str]:
        """What the last request wrote before it was stopped (its output files stay in the
        box): the head of each, read by the agent's file builtin (no process in the box)."""

        async def head(name: str) -> str:
            try:
                data = await self.box.read_file(f"{self._session_dir}/{name}", length=self._byte_cap)
            except OSError:  # never written (the request did not start), or unreadable
                return ""
            return data.decode("utf-8", "replace")

        return await head("out"), await head("err")

    async def _timed_out(self, seconds: float, note: str | None) -> ToolResult:
        stdout, stderr = await self._partial_output()
        lost = " The Python session was restarted: variables from earlier calls are gone." if self.persistent else ""
        if self.persistent:
            self._restarted_note = (
                "the Python session was restarted after a timeout: variables from earlier calls are gone"
            )
        return ToolResult(
            exit_code=TIMEOUT_EXIT_CODE,
            timed_out=True,
            timeout=seconds,
            note=((note + "; ") if note else "") + f"the code was stopped after {seconds:g} s.{lost}",
            **self._cap(stdout, stderr),
        )

    async def close(self) -> None:
        """Stops the interpreter (the box itself belongs to whoever created it)."""
        async with self._lock:
            await self._discard_interpreter()
            detached, self._detached = self._detached, None
            if detached is not None:
                await self._kill(detached)
